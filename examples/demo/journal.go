package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
)

// execution is the part of a line of an order-services -log journal the
// demo reads: one execution of one attempt of a step.
type execution struct {
	TaskID     string `json:"task_id"`
	Step       string `json:"step"`
	Capability string `json:"capability"`
	Outcome    string `json:"outcome"`
}

// serviceExecutions is what one service process executed, from its
// journal.
type serviceExecutions struct {
	service    string
	total      int
	byCap      map[string]int // by capability
	byOutcome  map[string]int // besides "ok"
	duplicates int            // steps that succeeded more than once
	err        error
}

func (e serviceExecutions) String() string {
	if e.err != nil {
		return fmt.Sprintf("%s ? (%v)", e.service, e.err)
	}
	var parts []string
	if len(e.byCap) > 1 {
		for _, c := range slices.Sorted(maps.Keys(e.byCap)) {
			parts = append(parts, fmt.Sprintf("%d %s", e.byCap[c], c))
		}
	}
	for _, c := range slices.Sorted(maps.Keys(e.byOutcome)) {
		parts = append(parts, fmt.Sprintf("%d %s", e.byOutcome[c], c))
	}
	if len(parts) == 0 {
		return fmt.Sprintf("%s %d", e.service, e.total)
	}
	return fmt.Sprintf("%s %d (%s)", e.service, e.total, strings.Join(parts, ", "))
}

// readJournals counts each service's executions.
func readJournals(services []*serviceProc) []serviceExecutions {
	out := make([]serviceExecutions, 0, len(services))
	for _, s := range services {
		out = append(out, readJournal(s.group.name+" ("+s.lang+")", s.journal))
	}
	return out
}

func readJournal(service, path string) serviceExecutions {
	e := serviceExecutions{service: service, byCap: map[string]int{}, byOutcome: map[string]int{}}
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return e // it executed nothing
	}
	if err != nil {
		e.err = err
		return e
	}
	defer f.Close()
	ok := map[[2]string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var x execution
		if err := json.Unmarshal(sc.Bytes(), &x); err != nil {
			e.err = fmt.Errorf("%s: %w", path, err)
			return e
		}
		e.total++
		e.byCap[x.Capability]++
		if x.Outcome == "ok" {
			ok[[2]string{x.TaskID, x.Step}]++
			continue
		}
		e.byOutcome[x.Outcome]++
	}
	if err := sc.Err(); err != nil {
		e.err = err
	}
	for _, n := range ok {
		if n > 1 {
			e.duplicates++
		}
	}
	return e
}
