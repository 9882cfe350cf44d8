package consensus

import (
	"errors"
	"fmt"
)

// ErrLimit: the command would take the cluster past one of its limits
// (tasks in flight). The state is unchanged; the API answers
// ResourceExhausted, and the wrapped message names the setting.
var ErrLimit = errors.New("limit reached")

// TasksInFlight is the number of tasks not yet complete, cancelled or
// resolved: the count max_tasks_in_flight caps. It is the size of the
// scheduling index, so it is rebuilt with it from a snapshot.
func (s *State) TasksInFlight() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.runs.Len()
}

// CheckInFlight refuses a new task when max tasks are already in flight
// (0: no cap). The FSM decides with the cap the command carries; the
// leader's API calls this first to spare the log a command bound to be
// refused.
func (s *State) CheckInFlight(max int) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.checkInFlight(max)
}

func (s *State) checkInFlight(max int) error {
	if n := s.runs.Len(); max > 0 && n >= max {
		return InFlightError(n, max)
	}
	return nil
}

// InFlightError is the refusal of a task at the cap on tasks in flight.
func InFlightError(n, max int) error {
	return fmt.Errorf("%w: %d tasks in flight, at the limit of %d (max_tasks_in_flight); wait for tasks to finish or raise the limit", ErrLimit, n, max)
}
