// Command order-demo runs the order-fulfilment workflow for real on a
// Tasker cluster on one machine, and kills its leader halfway through.
//
// It starts three server agents (s1, s2, s3: -server -bootstrap-expect 3
// -dev-timing, data dirs in a temporary dir, free ports; s2 and s3 -join
// s1), one client agent per service as its sidecar (orders, inventory,
// payments, shipping), and each example service as its own process
// attached to its own sidecar, each in its own language: orders and
// inventory in Go (bin/order-services -only ...), payments in TypeScript
// (examples/polyglot/payments, on Node.js, with the TypeScript SDK) and
// shipping in Python (examples/polyglot/shipping, standard library only,
// in push mode); -polyglot=false runs all four in Go. It applies
// examples/order-fulfilment.yaml through one sidecar, starts a batch of
// orders through another, and shows a live progress line with the
// current leader. Once -kill-at of the orders are complete it kills the
// leader with SIGKILL and times the failover: from the kill until a
// surviving server names a new leader (RaftPeers, polled every 50ms). The
// summary says how many orders completed, the failover time, how many
// tasks were lost (every task id started is read back, and must be
// complete), the executions of each service, and the latency. It stops
// everything it started, also on Ctrl-C or failure.
//
// `make demo` builds the binaries and runs it. It exits 0 when every task
// completed and none was lost, 1 when not (or something failed to start,
// or no new leader was elected), 130 when interrupted.
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
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/internal/sleep"
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

// Time limits and periods.
const (
	startTimeout    = 30 * time.Second // servers elect a leader; sidecars serve; services registered everywhere
	failoverTimeout = 15 * time.Second // a surviving server names a new leader
	serviceDrain    = 5 * time.Second  // services' -drain: their running steps finish and are reported
	servicesGrace   = 15 * time.Second // services drain, then exit
	agentGrace      = 35 * time.Second // an agent's own shutdown timeout is 30s
	progressPeriod  = 100 * time.Millisecond
	pollPeriod      = 50 * time.Millisecond // RaftPeers while timing a failover, and setup checks
)

// options is the command line.
type options struct {
	tasker, services, workflow string
	tasks, inflight            int
	flaky                      float64
	delay                      string
	seed                       uint64
	timeout                    time.Duration
	killAt                     float64
	breakers                   string
	keepLogs                   bool
	// polyglot runs payments in TypeScript and shipping in Python.
	polyglot               bool
	node, python           string
	paymentsTS, shippingPy string
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("order-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: order-demo [flags]\n\nRuns a batch of orders through a three-server Tasker cluster, one sidecar agent\nper example service, and kills the leader halfway.\n\nFlags:\n")
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
	fs.Float64Var(&o.killAt, "kill-at", 0.4, "kill -9 the leader once this `share` of the orders is complete; 0: never")
	fs.StringVar(&o.breakers, "breakers", "", "the servers' circuit-breaker policy `file`; default: the demo's (payments.charge opens after 10 consecutive failures, for 5s)")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up on the batch after this `long`")
	fs.BoolVar(&o.polyglot, "polyglot", true, "run payments in TypeScript (Node.js) and shipping in Python; false runs every service in Go")
	fs.StringVar(&o.node, "node", "node", "the Node.js `binary` that runs the payments service")
	fs.StringVar(&o.python, "python", "python3", "the Python 3 `binary` that runs the shipping service")
	fs.StringVar(&o.paymentsTS, "payments-ts", "examples/polyglot/payments/dist/main.js", "the TypeScript payments service, built (`make ts`)")
	fs.StringVar(&o.shippingPy, "shipping-py", "examples/polyglot/shipping/shipping.py", "the Python shipping service")
	fs.BoolVar(&o.keepLogs, "keep-logs", false, "keep the agents' and services' logs and data dirs even when every task completed")
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
	case o.killAt < 0 || o.killAt >= 1:
		return o, errors.New("-kill-at: want a share from 0 (never) up to (not including) 1")
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

	d := &demo{opts: o, out: stdout, began: time.Now(), hc: h2cClient()}
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
	d.cleanUp(failed, stderr)
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
	opts  options
	out   io.Writer
	began time.Time
	dir   string // logs, data dirs, execution journals
	hc    *http.Client
	// breakers is the servers' -breakers file.
	breakers string

	mu       sync.Mutex
	agents   []*agentProc // every agent started, in order, to stop them
	servers  []*agentProc
	sidecars []*agentProc // in the order of groups
	services []*serviceProc
	leaders  *leaderWatch
}

// group is one service: its own process, attached to its own client agent
// of the same name.
type group struct {
	name, only string
	flaky      bool
	// lang is the language the polyglot demo runs the service in: "go"
	// (order-services -only), "ts" or "py".
	lang string
}

// groups are the services of the demo; payments is flaky.
var groups = []group{
	{name: "orders", only: "orders,notifications", lang: "go"},
	{name: "inventory", only: "inventory", lang: "go"},
	{name: "payments", only: "payments", flaky: true, lang: "ts"},
	{name: "shipping", only: "shipping", lang: "py"},
}

// languages names each group's language for people.
var languages = map[string]string{"go": "Go", "ts": "TypeScript", "py": "Python"}

// lang is the language the run uses for g.
func (d *demo) lang(g group) string {
	if !d.opts.polyglot {
		return "go"
	}
	return g.lang
}

// command is how the run starts g's service: the program and its flags.
// Every implementation takes the same flags (the Go flag package accepts
// --name too) and journals in the same format.
func (d *demo) command(g group, api, journal string) (string, []string) {
	args := []string{"--addr", api, "--delay", d.opts.delay, "--seed", fmt.Sprint(d.opts.seed),
		"--drain", serviceDrain.String(), "--log", journal}
	if g.flaky {
		args = append(args, "--flaky", fmt.Sprint(d.opts.flaky))
	}
	switch d.lang(g) {
	case "ts":
		return d.opts.node, append([]string{d.opts.paymentsTS}, args...)
	case "py":
		return d.opts.python, append([]string{d.opts.shippingPy}, args...)
	}
	return d.opts.services, append([]string{"--only", g.only}, args...)
}

// checkTools fails early, with the fix, when a language's runtime or a
// service is missing.
func (d *demo) checkTools() error {
	for _, bin := range []string{d.opts.tasker, d.opts.services} {
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("%w (run 'make demo', which builds it)", err)
		}
	}
	if !d.opts.polyglot {
		return nil
	}
	for _, c := range []struct{ what, bin, fix string }{
		{"Node.js (payments is TypeScript)", d.opts.node, "install Node.js 20 or later"},
		{"Python 3 (shipping is Python)", d.opts.python, "install python3"},
	} {
		if _, err := exec.LookPath(c.bin); err != nil {
			return fmt.Errorf("%s: %w; %s, or run with -polyglot=false to run every service in Go", c.what, err, c.fix)
		}
	}
	for _, c := range []struct{ file, fix string }{
		{d.opts.paymentsTS, "run 'make ts' (make demo does), which builds the TypeScript SDK and the payments service"},
		{d.opts.shippingPy, "run the demo from the repository's root"},
	} {
		if _, err := os.Stat(c.file); err != nil {
			return fmt.Errorf("%w: %s, or run with -polyglot=false", err, c.fix)
		}
	}
	return nil
}

// The workflow's capabilities and the sidecar whose service offers each.
var offeredBy = map[string]string{
	"orders.validate":     "orders",
	"notifications.email": "orders",
	"inventory.reserve":   "inventory",
	"payments.charge":     "payments",
	"shipping.book":       "shipping",
}

// Which sidecars the demo itself uses: any one works, since each
// forwards what only the leader answers.
const (
	applyVia  = "inventory" // applies the workflow
	startVia  = "orders"    // starts and watches the orders
	verifyVia = "payments"  // reads every task back at the end
)

// serviceProc is one order-services process.
type serviceProc struct {
	*proc
	group   group
	lang    string // the language it is written in, for people
	journal string // its -log: one JSON line per execution
}

// run starts the cluster and the services, applies the workflow, runs the
// batch with a failover and prints its summary. It returns an error if
// anything failed, a task did not complete or one was lost; the caller
// stops the processes either way.
func (d *demo) run(ctx context.Context) error {
	manifest, err := os.ReadFile(d.opts.workflow)
	if err != nil {
		return fmt.Errorf("workflow: %w", err)
	}
	if err := d.checkTools(); err != nil {
		return err
	}
	if d.dir, err = os.MkdirTemp("", "tasker-demo-"); err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	d.breakers = d.opts.breakers
	if d.breakers == "" {
		d.breakers = filepath.Join(d.dir, "breakers.yaml")
		if err := os.WriteFile(d.breakers, []byte(demoBreakers), 0o644); err != nil {
			return fmt.Errorf("breakers: %w", err)
		}
	}
	langs := "in Go"
	if d.opts.polyglot {
		langs = "in Go, TypeScript and Python"
	}
	fmt.Fprintf(d.out, "Live demo: %d orders through a %d-server Tasker cluster, each service (%s) with its own sidecar agent\n", d.opts.tasks, serversExpected, langs)
	fmt.Fprintf(d.out, "  %-9s %s (logs and data dirs; kept if anything fails, or with -keep-logs)\n", "dir", d.dir)

	setup, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	t0 := time.Now()
	if err := d.startServers(setup); err != nil {
		return err
	}
	d.leaders = newLeaderWatch(d.servers)
	d.leaders.poll(setup)
	leader, term := d.leaders.current()
	for _, s := range d.servers {
		fmt.Fprintf(d.out, "  %-9s %s  api %s  raft %s  gossip %s  pid %d\n", "server", s.name, s.api, s.raft, s.gossip, s.pid())
	}
	fmt.Fprintf(d.out, "  %-9s %s leads (term %d); one Raft group formed %s after the start\n", "raft", leader, term, round(time.Since(t0)))

	if err := d.startSidecars(setup); err != nil {
		return err
	}
	if err := d.startServices(setup); err != nil {
		return err
	}
	for i, a := range d.sidecars {
		p := d.services[i]
		label := p.group.only + ", " + languages[d.lang(p.group)]
		if p.group.flaky {
			label += fmt.Sprintf(", flaky %.0f%%", d.opts.flaky*100)
		}
		fmt.Fprintf(d.out, "  %-9s %-9s %s  pid %d  ← service pid %d (%s)\n", "sidecar", a.name, a.api, a.pid(), p.pid(), label)
	}
	if err := d.waitCatalog(setup, offeredBy); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "  %-9s every server sees, by gossip, each capability on its service's sidecar\n", "catalog")

	apply := taskerv1connect.NewWorkflowServiceClient(d.hc, d.sidecar(applyVia).api)
	res, err := apply.ApplyWorkflow(setup, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: string(manifest)}))
	if err != nil {
		return fmt.Errorf("apply %s through the %s sidecar: %w", d.opts.workflow, applyVia, err)
	}
	w := res.Msg.GetWorkflow()
	by := ""
	if l := res.Header().Get("Tasker-Leader"); l != "" {
		by = ", answered by the leader " + l
	}
	fmt.Fprintf(d.out, "  %-9s %s/%s %s applied through the %s sidecar%s: %d steps\n", "workflow",
		w.GetNamespace(), w.GetName(), w.GetVersion(), applyVia, by, len(w.GetSteps()))
	for _, warning := range res.Msg.GetWarnings() {
		fmt.Fprintf(d.out, "  %-9s warning: %s\n", "", warning)
	}

	// A child that dies during the run, other than the leader the demo
	// kills, ends it at once rather than leaving the batch to wait for
	// tasks that cannot finish.
	sigCtx := ctx
	ctx, abort := context.WithCancelCause(ctx)
	defer abort(nil)
	var children []*proc
	for _, a := range d.agents {
		children = append(children, a.proc)
	}
	for _, s := range d.services {
		children = append(children, s.proc)
	}
	for _, p := range children {
		go func() {
			select {
			case <-p.done:
				if !p.killed.Load() {
					abort(fmt.Errorf("%s exited during the run (%v); its log ends:\n%s", p.name, p.err, p.tail(10)))
				}
			case <-ctx.Done():
			}
		}()
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go d.leaders.run(watchCtx)

	b := newBatch(client.New(client.Options{Addr: d.sidecar(startVia).api}), w.GetNamespace(), w.GetName(), d.opts, d.out,
		func() string { l, _ := d.leaders.current(); return l })
	killNote := ""
	if b.threshold > 0 {
		killNote = fmt.Sprintf("; the leader is killed (SIGKILL) at %d/%d complete", b.threshold, d.opts.tasks)
	}
	fmt.Fprintf(d.out, "Running %d orders through the %s sidecar, at most %d in flight%s:\n", d.opts.tasks, startVia, d.opts.inflight, killNote)
	var (
		fo     *failover
		foErr  error
		foDone = make(chan struct{})
	)
	go func() {
		defer close(foDone)
		fo, foErr = d.failover(ctx, b)
		if foErr != nil {
			abort(foErr)
		}
	}()
	results, batchErr := b.run(ctx)
	if cause := context.Cause(ctx); batchErr != nil && cause != nil {
		batchErr = cause // a child died, or the failover failed
	}
	abort(errBatchDone) // ends the failover goroutine if it still waits
	<-foDone
	if sigCtx.Err() != nil {
		return sigCtx.Err()
	}

	s := summarize(results, b.wall)
	s.failover = fo
	s.startRetries, s.watchRetries = b.startRetries, b.watchRetries
	s.executions = readJournals(d.services)
	s.breakersOpened = d.breakerOpenings()
	s.breakersFile = d.opts.breakers
	if batchErr == nil {
		s.lost, s.found, s.verifyErr = d.verify(sigCtx, results)
	} else {
		s.verifyErr = errors.New("not checked: the batch did not finish")
	}
	s.write(d.out, time.Since(d.began))
	errs := []error{batchErr}
	if foErr != nil && !errors.Is(batchErr, foErr) {
		errs = append(errs, foErr)
	}
	if n := s.tasks - s.complete; n > 0 && batchErr == nil {
		errs = append(errs, fmt.Errorf("%d of %d tasks did not complete", n, s.tasks))
	}
	if len(s.lost) > 0 {
		errs = append(errs, fmt.Errorf("%d tasks lost", len(s.lost)))
	}
	if s.verifyErr != nil && batchErr == nil {
		errs = append(errs, s.verifyErr)
	}
	if b.threshold > 0 && fo == nil && batchErr == nil {
		errs = append(errs, errors.New("the leader was not killed: the batch ended first"))
	}
	return errors.Join(errs...)
}

// errBatchDone ends the failover goroutine once the batch is over.
var errBatchDone = errors.New("batch done")

// failover waits until the batch reaches its threshold, kills the leader
// and waits until a surviving server names a new one. It returns nil, nil
// when there is no threshold or the batch ended first.
func (d *demo) failover(ctx context.Context, b *batch) (*failover, error) {
	if b.threshold == 0 {
		return nil, nil
	}
	select {
	case <-b.reached:
	case <-ctx.Done():
		return nil, nil
	}
	inflight := b.inFlight()
	f, err := d.leaders.killLeader(ctx, b.completed())
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil
		}
		return nil, err
	}
	f.inflight = inflight
	b.note("  ✖ %d/%d complete, %d in flight: killed the leader %s (pid %d) with SIGKILL", f.atComplete, d.opts.tasks, len(inflight), f.killed, f.pid)
	t := time.NewTimer(failoverTimeout)
	defer t.Stop()
	select {
	case <-f.electedChan:
		b.note("  ✔ %s leads (term %d) %s after the kill; orders go on", f.leader, f.newTerm, round(f.took()))
		return f, nil
	case <-ctx.Done():
		return f, nil
	case <-t.C:
	}
	var tails []string
	for _, s := range d.servers {
		if s.name != f.killed {
			tails = append(tails, fmt.Sprintf("  %s's log ends:\n%s", s.name, s.tail(8)))
		}
	}
	return f, fmt.Errorf("no surviving server named a new leader within %s of killing %s; RaftPeers said: %s\n%s",
		failoverTimeout, f.killed, d.leaders.state(), strings.Join(tails, "\n"))
}

// verify reads every task the batch started back through another sidecar,
// with consistent reads (the leader confirms with a quorum that it still
// leads before it answers). It returns the tasks lost: not found, or no
// longer complete although the batch saw them complete; and how many it
// found in each state.
func (d *demo) verify(ctx context.Context, results []result) (lost []string, states map[string]int, err error) {
	api := taskerv1connect.NewWorkflowServiceClient(d.hc, d.sidecar(verifyVia).api)
	deadline := time.Now().Add(30 * time.Second)
	states = map[string]int{}
	for _, r := range results {
		if r.task == nil {
			continue // never started: reported as not complete
		}
		var res *connect.Response[taskerv1.GetTaskResponse]
		var err error
		for wait := 50 * time.Millisecond; ; wait = min(2*wait, 500*time.Millisecond) {
			req := connect.NewRequest(&taskerv1.GetTaskRequest{Id: r.task.GetId()})
			req.Header().Set("Tasker-Consistency", "consistent")
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			res, err = api.GetTask(cctx, req)
			cancel()
			if err == nil || !transient(err) || time.Now().After(deadline) || !sleep.For(ctx, wait) {
				break
			}
		}
		switch {
		case connect.CodeOf(err) == connect.CodeNotFound:
			lost = append(lost, fmt.Sprintf("%s (%s): not found", r.order, r.task.GetId()))
		case err != nil:
			return lost, states, fmt.Errorf("read %s back through the %s sidecar: %w", r.task.GetId(), verifyVia, err)
		default:
			got := res.Msg.GetTask().GetState()
			states[stateName(got)]++
			if r.task.GetState() == taskerv1.TaskState_TASK_STATE_COMPLETE && got != taskerv1.TaskState_TASK_STATE_COMPLETE {
				lost = append(lost, fmt.Sprintf("%s (%s): seen complete, now %s", r.order, r.task.GetId(), stateName(got)))
			}
		}
	}
	return lost, states, nil
}

// stateName is "complete" for TASK_STATE_COMPLETE.
func stateName(s taskerv1.TaskState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "TASK_STATE_"))
}

// startServices starts one order-services process per group, attached to
// the group's sidecar.
func (d *demo) startServices(ctx context.Context) error {
	for i, g := range groups {
		journal := filepath.Join(d.dir, g.name+"-executions.jsonl")
		bin, args := d.command(g, d.sidecars[i].api, journal)
		p, err := startProc(g.name+" service ("+languages[d.lang(g)]+")", bin, args, filepath.Join(d.dir, g.name+"-service.log"), nil)
		if err != nil {
			return err
		}
		d.services = append(d.services, &serviceProc{proc: p, group: g, lang: languages[d.lang(g)], journal: journal})
	}
	return ctx.Err()
}

// stopAll stops the services, at once (each drains its running steps),
// then the agents still running, and says how each ended.
func (d *demo) stopAll() error {
	var errs []error
	var mu sync.Mutex
	stopEach := func(procs []*proc, grace time.Duration) int {
		var wg sync.WaitGroup
		ok := 0
		for _, p := range procs {
			if p.killed.Load() {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := p.stop(grace)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w\n%s", p.name, err, p.tail(10)))
					return
				}
				ok++
			}()
		}
		wg.Wait()
		return ok
	}
	var services, clients, servers []*proc
	for _, s := range d.services {
		services = append(services, s.proc)
	}
	d.mu.Lock()
	var killed []string
	for _, a := range d.agents {
		switch {
		case a.killed.Load():
			killed = append(killed, a.name)
		case a.server:
			servers = append(servers, a.proc)
		default:
			clients = append(clients, a.proc)
		}
	}
	d.mu.Unlock()
	if len(services)+len(clients)+len(servers) == 0 {
		return nil
	}
	drained := stopEach(services, servicesGrace)
	// Then every agent at once: each spends a moment leaving gossip.
	var c, n int
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c = stopEach(clients, agentGrace) }()
	go func() { defer wg.Done(); n = stopEach(servers, agentGrace) }()
	wg.Wait()
	note := ""
	if len(killed) > 0 {
		note = fmt.Sprintf(" (%s had been killed)", strings.Join(killed, ", "))
	}
	fmt.Fprintf(d.out, "Stopped: %d of %d services drained, %d of %d sidecars and %d of %d servers stopped cleanly%s.\n",
		drained, len(services), c, len(clients), n, len(servers), note)
	return errors.Join(errs...)
}

// cleanUp removes the demo's dir after a clean run, unless asked to keep it.
func (d *demo) cleanUp(failed bool, stderr io.Writer) {
	if d.dir == "" {
		return
	}
	if failed || d.opts.keepLogs {
		fmt.Fprintf(stderr, "order-demo: logs and data kept in %s\n", d.dir)
		return
	}
	removeAll(d.dir)
}

// poll calls check every pollPeriod until it reports done, returns an
// error, or ctx ends. Each call gets at most a second.
func poll(ctx context.Context, check func(context.Context) (bool, error)) error {
	t := time.NewTicker(pollPeriod)
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
