// Command order-services runs the apps behind examples/order-fulfilment.yaml:
// the order, inventory, payments, shipping and notification services, each
// a capability executed with the Go SDK's worker.
//
// One process can offer every capability, or -only picks some, so that
// each service runs as its own process next to the same sidecar:
//
//	order-services -addr http://127.0.0.1:7420 -only inventory.reserve
//	order-services -only payments.charge -flaky 0.3
//	order-services -only orders.validate,shipping.book,notifications.email
//
// The services are simulations with the behaviour of real ones: each
// execution takes a while (-delay), results carry ids derived from the
// step's idempotency key (so a retried attempt names the same
// reservation, charge and parcel, as an idempotent provider would), and a
// few inputs fail for good the way real services do: a payment token
// "tok_declined" is declined (card_declined), "tok_no_funds" has
// insufficient funds, and an item whose SKU starts with "OOS-" is out of
// stock. -flaky makes payments.charge fail now and then with the
// retryable gateway_unavailable; which attempts fail is a function of
// -seed, the order id and the attempt number, so a run can be repeated.
// -fail-while FILE takes the payment gateway down on demand: while FILE
// exists, every payments.charge call fails with gateway_unavailable;
// removing the file brings the gateway back (tests use it to trip and
// then close circuit breakers).
//
// -log FILE appends one JSON line per execution (see [execution]), which
// the end-to-end tests read to check what ran, when, and what it returned.
//
// SIGINT or SIGTERM drains the worker: no new step starts, running steps
// finish (up to -drain) and are reported, and the process exits 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tasker-run/tasker/sdk/go/worker"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// config is the command line.
type config struct {
	addr        string
	only        []string
	flaky       float64
	failWhile   string
	delay       delayRange
	logFile     string
	seed        uint64
	concurrency int
	drain       time.Duration
	logLevel    slog.Level
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	cfg := config{delay: delayRange{min: 20 * time.Millisecond, max: 80 * time.Millisecond}}
	fs := flag.NewFlagSet("order-services", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: order-services [flags]\n\nRuns the example order services as Tasker workers. Capabilities:\n  %s\n\nFlags:\n",
			strings.Join(capabilityNames(), "\n  "))
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.addr, "addr", "", "the sidecar's `URL`; default $TASKER_ADDR, else http://127.0.0.1:7420")
	only := fs.String("only", "", "comma-separated `capabilities` to offer (a system name such as \"payments\" means all of its capabilities); default all")
	fs.Float64Var(&cfg.flaky, "flaky", 0, "`probability` (0 to 1) that a payments.charge attempt fails with the retryable gateway_unavailable")
	fs.StringVar(&cfg.failWhile, "fail-while", "", "while `FILE` exists, every payments.charge call fails with the retryable gateway_unavailable")
	fs.Var(&cfg.delay, "delay", "simulated work time per execution: a `duration` or a range MIN-MAX, such as 50ms-200ms")
	fs.StringVar(&cfg.logFile, "log", "", "append one JSON line per execution to `FILE`")
	fs.Uint64Var(&cfg.seed, "seed", 0, "random `seed` for delays and flaky failures; 0 picks one (and logs it)")
	fs.IntVar(&cfg.concurrency, "concurrency", worker.DefaultConcurrency, "at most `N` steps of each capability run at once")
	fs.DurationVar(&cfg.drain, "drain", 10*time.Second, "on SIGINT or SIGTERM, how long running steps get to finish")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if cfg.flaky < 0 || cfg.flaky > 1 {
		return cfg, fmt.Errorf("-flaky %v: want a probability from 0 to 1", cfg.flaky)
	}
	if cfg.concurrency < 1 {
		return cfg, fmt.Errorf("-concurrency %d: want 1 or more", cfg.concurrency)
	}
	if err := cfg.logLevel.UnmarshalText([]byte(*level)); err != nil {
		return cfg, fmt.Errorf("-log-level: %w", err)
	}
	var err error
	if cfg.only, err = selectCapabilities(*only); err != nil {
		return cfg, fmt.Errorf("-only: %w", err)
	}
	return cfg, nil
}

// selectCapabilities resolves -only: capability names, or system names
// standing for every capability of the system.
func selectCapabilities(only string) ([]string, error) {
	all := capabilityNames()
	if strings.TrimSpace(only) == "" {
		return all, nil
	}
	var out []string
	for _, name := range strings.Split(only, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		matched := false
		for _, c := range all {
			if c == name || strings.HasPrefix(c, name+".") {
				matched = true
				if !slices.Contains(out, c) {
					out = append(out, c)
				}
			}
		}
		if !matched {
			return nil, fmt.Errorf("unknown capability %q; known: %s", name, strings.Join(all, ", "))
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no capability selected")
	}
	return out, nil
}

func run(args []string, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "order-services: %v\n", err)
		return exitUsage
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	if err := serve(cfg, log); err != nil {
		log.Error("order services stopped", "error", err)
		return exitFail
	}
	return exitOK
}

// serve runs the selected services until SIGINT or SIGTERM, then drains.
func serve(cfg config, log *slog.Logger) error {
	if cfg.seed == 0 {
		cfg.seed = uint64(time.Now().UnixNano())
	}
	var journal *journal
	if cfg.logFile != "" {
		var err error
		if journal, err = openJournal(cfg.logFile); err != nil {
			return err
		}
		defer journal.Close()
	}
	svc := newServices(cfg.seed, cfg.flaky, cfg.delay, journal, log)
	svc.failWhile = cfg.failWhile

	w := worker.New(worker.Options{Addr: cfg.addr, Logger: log, DrainTimeout: cfg.drain})
	for _, name := range cfg.only {
		c := svc.capability(name)
		w.Handle(name, c.handler,
			worker.Concurrency(cfg.concurrency),
			worker.Schemas(c.input, c.output),
			worker.Version(version),
			worker.Description(c.description))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("order services starting", "capabilities", strings.Join(cfg.only, ","), "flaky", cfg.flaky,
		"fail_while", cfg.failWhile, "delay", cfg.delay.String(), "seed", cfg.seed, "pid", os.Getpid())
	if err := w.Run(ctx); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	log.Info("order services drained; exiting")
	return nil
}
