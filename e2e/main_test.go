package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The binaries under test and the repository they were built from, set
// by TestMain.
var (
	taskerBin   string
	servicesBin string
	repoRoot    string
)

// raceEnv, when set to 1, builds the binaries with the race detector: a
// race in the agent then fails the test that hit it (the agent exits 66).
const raceEnv = "TASKER_E2E_RACE"

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tasker-e2e-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if repoRoot, err = filepath.Abs(".."); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	taskerBin = filepath.Join(dir, "tasker")
	servicesBin = filepath.Join(dir, "order-services")
	if err := buildAll(map[string]string{taskerBin: "./cmd/tasker", servicesBin: "./examples/services"}); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	return m.Run()
}

// buildAll builds each package into its output path with `go build`, at
// once, so the tests run the code of this checkout.
func buildAll(outputs map[string]string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		if root := os.Getenv("GOROOT"); root != "" {
			goBin = filepath.Join(root, "bin", "go")
		} else {
			return fmt.Errorf("build the binaries: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for out, pkg := range outputs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			args := []string{"build", "-o", out}
			if os.Getenv(raceEnv) == "1" {
				args = append(args, "-race")
			}
			cmd := exec.CommandContext(ctx, goBin, append(args, pkg)...)
			cmd.Dir = repoRoot
			if b, err := cmd.CombinedOutput(); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("go build %s: %w\n%s", pkg, err, strings.TrimSpace(string(b))))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
