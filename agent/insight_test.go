package agent

import (
	"testing"

	"github.com/tasker-run/tasker/consensus"
	"github.com/tasker-run/tasker/insight"
)

// TestHistoryVocabulary: the analyzers read the history's outcomes and
// resolutions by name. The two packages do not import each other (the
// analyzers stay pure and light), so this test keeps their names equal:
// a renamed outcome would otherwise silently match no rule.
func TestHistoryVocabulary(t *testing.T) {
	for _, c := range []struct{ history, analyzers string }{
		{consensus.OutcomeCompleted, insight.OutcomeCompleted},
		{consensus.OutcomeFailed, insight.OutcomeFailed},
		{consensus.OutcomeTimedOut, insight.OutcomeTimedOut},
		{consensus.OutcomeReleased, insight.OutcomeReleased},
		{consensus.OutcomeCancelled, insight.OutcomeCancelled},
		{consensus.ResolutionRetrySucceeded, insight.ResolutionRetrySucceeded},
		{consensus.ResolutionResolvedManually, insight.ResolutionResolvedManually},
		{consensus.ResolutionRetriedManually, insight.ResolutionRetriedManually},
		{consensus.ResolutionCancelled, insight.ResolutionCancelled},
		{consensus.ResolutionDeadLettered, insight.ResolutionDeadLettered},
	} {
		if c.history != c.analyzers {
			t.Errorf("the history says %q where the analyzers expect %q", c.history, c.analyzers)
		}
	}
}
