// Command eval replays the insight evaluation set (insight/testdata/eval)
// and prints, per scenario, the expected and the found root cause or
// removed edges, then the top-1 accuracy and the optimizer's results. It
// exits 1 when the accuracy is below insight.MinAccuracy or an optimizer
// scenario does not match: `make eval` is a regression check.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/tasker-run/tasker/insight"
)

func main() {
	dir := flag.String("dir", "insight/testdata/eval", "the directory of scenario files (*.json)")
	flag.Parse()
	scs, err := insight.LoadScenarios(os.DirFS(*dir))
	if err != nil {
		fmt.Fprintf(os.Stderr, "eval: %v\n", err)
		os.Exit(2)
	}
	if len(scs) == 0 {
		fmt.Fprintf(os.Stderr, "eval: no scenarios in %s\n", *dir)
		os.Exit(2)
	}
	r := insight.Evaluate(scs)
	fmt.Print(r.String())
	if !r.Passed() {
		fmt.Println("REGRESSION")
		os.Exit(1)
	}
}
