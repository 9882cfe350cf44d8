// Command order-demo runs the order-fulfilment workflow for real on one
// machine: it starts a dev agent (bin/tasker agent -dev) on a free port and
// the example order services (bin/order-services) as separate processes,
// one of them flaky, applies examples/order-fulfilment.yaml, runs a batch
// of orders through it with a live progress line, prints a summary, and
// stops everything it started, also on Ctrl-C or failure.
//
// `make demo` builds the binaries and runs it. It exits 0 when every task
// completed, 1 when one did not (or something failed to start), 130 when
// interrupted.
//
// The payments service fails -flaky of its charge attempts with the
// retryable gateway_unavailable. Which attempts fail is a function of
// -seed, the order id and the attempt number, so a run with the same seed
// sees the same failures (timings vary); -seed 0 draws a new seed. The
// workflow allows a charge five attempts, so with a flaky gateway an order
// can, rarely, fail for good: the demo then says which, and exits 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
	"github.com/tasker-run/tasker/sdk/go/client"
)

// Exit codes.
const (
	exitOK          = 0
	exitFail        = 1
	exitUsage       = 2
	exitInterrupted = 130
)

// Time limits of the setup and the shutdown.
const (
	startTimeout   = 20 * time.Second // the agent is ready and has a leader; services registered
	serviceDrain   = 5 * time.Second  // services' -drain: their running steps finish and are reported
	servicesGrace  = 15 * time.Second // services drain, then exit
	agentGrace     = 35 * time.Second // the agent's own shutdown timeout is 30s
	progressPeriod = 100 * time.Millisecond
)

// options is the command line.
type options struct {
	tasker, services, workflow string
	tasks, inflight            int
	flaky                      float64
	delay                      string
	seed                       uint64
	timeout                    time.Duration
	keepLogs                   bool
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("order-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: order-demo [flags]\n\nRuns a batch of orders through a live dev agent and the example order services.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.tasker, "tasker", "bin/tasker", "the tasker `binary`")
	fs.StringVar(&o.services, "services", "bin/order-services", "the order-services `binary`")
	fs.StringVar(&o.workflow, "workflow", "examples/order-fulfilment.yaml", "the workflow manifest `file`")
	fs.IntVar(&o.tasks, "tasks", 50, "how many orders to run")
	fs.IntVar(&o.inflight, "inflight", 10, "at most this many orders in flight at once")
	fs.Float64Var(&o.flaky, "flaky", 0.3, "`probability` that a payments.charge attempt fails with the retryable gateway_unavailable")
	fs.StringVar(&o.delay, "delay", "40ms-160ms", "simulated work time of each step: a `duration` or MIN-MAX")
	fs.Uint64Var(&o.seed, "seed", 7, "`seed` of the simulated failures and delays; 0 draws one")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up on the batch after this `long`")
	fs.BoolVar(&o.keepLogs, "keep-logs", false, "keep the agent's and services' logs even when every task completed")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.tasks < 1:
		return o, errors.New("-tasks: want 1 or more")
	case o.inflight < 1:
		return o, errors.New("-inflight: want 1 or more")
	case o.flaky < 0 || o.flaky >= 1:
		return o, errors.New("-flaky: want a probability from 0 up to (not including) 1")
	case o.timeout <= 0:
		return o, errors.New("-timeout: want a positive duration")
	}
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	return o, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "order-demo: %v\n", err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first interrupt a second one kills the demo at once
		// (its children die with it, on Linux).
		<-ctx.Done()
		stop()
	}()

	d := &demo{opts: o, out: stdout, began: time.Now()}
	runErr := d.run(ctx)
	interrupted := ctx.Err() != nil
	if interrupted {
		fmt.Fprintln(stdout, "\ninterrupted: stopping everything the demo started")
	}
	stopErr := d.stopAll()
	switch {
	case runErr != nil && !interrupted:
		fmt.Fprintf(stderr, "order-demo: %v\n", runErr)
	case stopErr != nil:
		fmt.Fprintf(stderr, "order-demo: %v\n", stopErr)
	}
	failed := runErr != nil || stopErr != nil || interrupted
	d.cleanLogs(failed, stderr)
	switch {
	case interrupted:
		return exitInterrupted
	case failed:
		return exitFail
	}
	return exitOK
}

// demo is one run: the processes it started and what it learned.
type demo struct {
	opts     options
	out      io.Writer
	began    time.Time
	logDir   string
	agent    *proc
	services []*proc
	addr     string
	client   *client.Client
	cluster  taskerv1connect.ClusterServiceClient
}

// service is one example service process: a system of the workflow.
type service struct {
	name, only string
	flaky      bool
}

// services are the processes of the demo: the payments service, which
// is flaky, and inventory run alone; the other systems share a process.
var services = []service{
	{name: "orders+shipping+notifications", only: "orders,shipping,notifications"},
	{name: "inventory", only: "inventory"},
	{name: "payments", only: "payments", flaky: true},
}

// readyLine is what `tasker agent -dev` prints once its API listens.
var readyLine = regexp.MustCompile(`API on (http://\S+)`)

// run starts the agent and the services, applies the workflow, runs the
// batch and prints its summary. It returns an error if anything failed or
// a task did not complete; the caller stops the processes either way.
func (d *demo) run(ctx context.Context) error {
	manifest, err := os.ReadFile(d.opts.workflow)
	if err != nil {
		return fmt.Errorf("workflow: %w", err)
	}
	for _, bin := range []string{d.opts.tasker, d.opts.services} {
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("%w (run 'make demo', which builds it)", err)
		}
	}
	if d.logDir, err = os.MkdirTemp("", "tasker-demo-"); err != nil {
		return fmt.Errorf("log dir: %w", err)
	}
	fmt.Fprintf(d.out, "Live demo: %d orders through a dev agent and the example services\n", d.opts.tasks)
	fmt.Fprintf(d.out, "  %-10s %s (kept if anything fails, or with -keep-logs)\n", "logs", d.logDir)

	setup, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if err := d.startAgent(setup); err != nil {
		return err
	}
	if err := d.startServices(setup); err != nil {
		return err
	}
	res, err := d.client.ApplyWorkflow(setup, manifest)
	if err != nil {
		return fmt.Errorf("apply %s: %w", d.opts.workflow, err)
	}
	w := res.GetWorkflow()
	fmt.Fprintf(d.out, "  %-10s %s/%s %s applied: %d steps\n", "workflow", w.GetNamespace(), w.GetName(), w.GetVersion(), len(w.GetSteps()))

	// A child that dies during the run ends it at once, rather than
	// leaving the batch to wait for tasks that cannot finish.
	ctx, abort := context.WithCancelCause(ctx)
	defer abort(nil)
	for _, p := range append([]*proc{d.agent}, d.services...) {
		go func() {
			select {
			case <-p.done:
				abort(fmt.Errorf("%s exited during the run (%v); its log ends:\n%s", p.name, p.err, p.tail(10)))
			case <-ctx.Done():
			}
		}()
	}

	b := newBatch(d.client, w.GetNamespace(), w.GetName(), d.opts, d.out)
	results, err := b.run(ctx)
	if err != nil {
		return err
	}
	s := summarize(results, b.wall)
	s.write(d.out, time.Since(d.began))
	if n := s.tasks - s.complete; n > 0 {
		return fmt.Errorf("%d of %d tasks did not complete", n, s.tasks)
	}
	return nil
}

// startAgent starts a dev agent on free ports and waits until it has a
// leader to write through.
func (d *demo) startAgent(ctx context.Context) error {
	ready := newLineWatcher(readyLine.MatchString)
	p, err := startProc("agent", d.opts.tasker,
		[]string{"agent", "-dev", "-node", "demo", "-http-port", "0", "-raft-port", "0"},
		filepath.Join(d.logDir, "agent.log"), ready)
	if err != nil {
		return err
	}
	d.agent = p
	select {
	case line := <-ready.found:
		d.addr = readyLine.FindStringSubmatch(line)[1]
	case <-p.done:
		return fmt.Errorf("the agent exited before it was ready (%v):\n%s", p.err, p.tail(10))
	case <-ctx.Done():
		return fmt.Errorf("the agent was not ready in time: %w", ctx.Err())
	}
	hc := h2cClient()
	d.client = client.New(client.Options{Addr: d.addr})
	d.cluster = taskerv1connect.NewClusterServiceClient(hc, d.addr)
	health := grpchealth.NewClient(hc, d.addr)
	err = poll(ctx, func(ctx context.Context) (bool, error) {
		res, err := health.Check(ctx, &grpchealth.CheckRequest{})
		return err == nil && res.Status == grpchealth.StatusServing, nil
	})
	if err != nil {
		return fmt.Errorf("the agent at %s did not report SERVING: %w", d.addr, err)
	}
	fmt.Fprintf(d.out, "  %-10s %s (pid %d), serving\n", "agent", d.addr, p.pid())
	return nil
}

// startServices starts one process per service and waits until the agent
// lists every capability of the workflow.
func (d *demo) startServices(ctx context.Context) error {
	var names []string
	for _, s := range services {
		args := []string{"-addr", d.addr, "-only", s.only, "-delay", d.opts.delay, "-seed", fmt.Sprint(d.opts.seed), "-drain", serviceDrain.String()}
		label := s.name
		if s.flaky {
			args = append(args, "-flaky", fmt.Sprint(d.opts.flaky))
			label += fmt.Sprintf(" (flaky %.0f%%)", d.opts.flaky*100)
		}
		p, err := startProc(s.name, d.opts.services, args, filepath.Join(d.logDir, strings.ReplaceAll(s.name, "+", "-")+".log"), nil)
		if err != nil {
			return err
		}
		d.services = append(d.services, p)
		names = append(names, fmt.Sprintf("%s [pid %d]", label, p.pid()))
	}
	want := []string{"orders.validate", "inventory.reserve", "payments.charge", "shipping.book", "notifications.email"}
	err := poll(ctx, func(ctx context.Context) (bool, error) {
		for _, p := range d.services {
			if p.exited() {
				return false, fmt.Errorf("service %s exited (%v):\n%s", p.name, p.err, p.tail(10))
			}
		}
		res, err := d.cluster.Members(ctx, connect.NewRequest(&taskerv1.MembersRequest{}))
		if err != nil {
			return false, nil
		}
		var have []string
		for _, m := range res.Msg.GetMembers() {
			have = append(have, m.GetCapabilities()...)
		}
		for _, c := range want {
			if !slices.Contains(have, c) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("services: %w", err)
	}
	fmt.Fprintf(d.out, "  %-10s %s\n", "services", strings.Join(names, ", "))
	return nil
}

// stopAll stops the services, at once (each drains its running steps),
// then the agent, and says how each ended.
func (d *demo) stopAll() error {
	if d.agent == nil {
		return nil
	}
	errs := make([]error, len(d.services))
	var wg sync.WaitGroup
	for i, p := range d.services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.stop(servicesGrace); err != nil {
				errs[i] = fmt.Errorf("service %s: %w", p.name, err)
			}
		}()
	}
	wg.Wait()
	drained := 0
	for _, err := range errs {
		if err == nil {
			drained++
		}
	}
	agent := "agent stopped"
	if err := d.agent.stop(agentGrace); err != nil {
		errs = append(errs, fmt.Errorf("agent: %w\n%s", err, d.agent.tail(10)))
		agent = "agent FAILED to stop cleanly"
	}
	fmt.Fprintf(d.out, "Stopped: %d of %d services drained, %s.\n", drained, len(d.services), agent)
	return errors.Join(errs...)
}

// cleanLogs removes the log dir after a clean run, unless asked to keep it.
func (d *demo) cleanLogs(failed bool, stderr io.Writer) {
	if d.logDir == "" {
		return
	}
	if failed || d.opts.keepLogs {
		fmt.Fprintf(stderr, "order-demo: logs kept in %s\n", d.logDir)
		return
	}
	_ = os.RemoveAll(d.logDir)
}

// h2cClient speaks HTTP/2 without TLS, as the agent's API does.
func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

// poll calls check every 50ms until it reports done, returns an error,
// or ctx ends. Each call gets at most a second.
func poll(ctx context.Context, check func(context.Context) (bool, error)) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		done, err := check(cctx)
		cancel()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
