package main

import (
	"bytes"
	"strings"
	"testing"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// TestAIGenerateUsage: bad command lines are refused before any call,
// with exit 2 and a message naming what is wrong.
func TestAIGenerateUsage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"ai", "generate"}, "want one description (quote it), got 0 arguments"},
		{[]string{"ai", "generate", "validate", "then charge"}, "want one description (quote it), got 2 arguments"},
		{[]string{"ai", "generate", "  "}, "the description is empty"},
		{[]string{"ai", "generate", strings.Repeat("é", 4001)}, "the description is 4001 characters, over the limit of 4000"},
		{[]string{"ai", "generate", "charge", "-o", "xml"}, "want table, json or yaml"},
	} {
		t.Run(strings.Join(tt.args[:min(len(tt.args), 3)], " "), func(t *testing.T) {
			code, _, stderr := tasker(t, append(tt.args, "-addr", "http://127.0.0.1:1")...)
			if code != exitUsage || !strings.Contains(stderr, tt.want) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr, exitUsage, tt.want)
			}
		})
	}
}

// TestWriteDraft: a draft prints its manifest, shape and explanation, and
// then what is missing or wrong and what happens next.
func TestWriteDraft(t *testing.T) {
	manifest := "name: charges\nversion: 1.0.0\nsteps:\n  - name: charge\n    capability: payments.charge\n"
	for _, tt := range []struct {
		name   string
		g      *taskerv1.GenerateWorkflowResponse
		dryRun bool
		want   []string
		not    []string
	}{
		{
			name: "filed",
			g:    &taskerv1.GenerateWorkflowResponse{Manifest: manifest, Valid: true, Rounds: 2, Summary: "1 step", Explanation: "Charges.", ProposalId: "p-4"},
			want: []string{"Draft (valid, 2 answers from the model):\n\nname: charges\n", "Shape: 1 step", "Explanation (language model):\nCharges.",
				"Filed as proposal p-4.", "'tasker ai proposals approve p-4'"},
			not: []string{"Problems", "Missing"},
		},
		{
			name: "not valid",
			g: &taskerv1.GenerateWorkflowResponse{Manifest: manifest, Rounds: 4, MissingCapabilities: []string{"payments.refund"},
				Problems: []string{`capability "payments.refund" is needed but no agent offers it`, "steps[0] (line 4): dependency cycle"}},
			want: []string{"Draft (not valid, 4 answers from the model)", "Missing capabilities (no agent offers them):\n  payments.refund\n",
				"Problems (2):\n  capability \"payments.refund\"", "  steps[0] (line 4): dependency cycle", "Not filed: the draft is not valid."},
			not: []string{"Filed as proposal"},
		},
		{
			name:   "dry run",
			g:      &taskerv1.GenerateWorkflowResponse{Manifest: manifest, Valid: true, Rounds: 1},
			dryRun: true,
			want:   []string{"Draft (valid, 1 answer from the model)", "Dry run: no proposal filed."},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			writeDraft(&b, tt.g, tt.dryRun)
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, b.String())
				}
			}
			for _, w := range tt.not {
				if strings.Contains(b.String(), w) {
					t.Errorf("output has %q:\n%s", w, b.String())
				}
			}
		})
	}
}
