package e2e

// The cluster harness: several real agents (Raft servers and client
// agents) and the order services attached to the client agents, all on
// loopback, on free ports.

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

// clientSpec is a client agent of a test cluster and the order services
// attached to it.
type clientSpec struct {
	// name is the agent's node name.
	name string
	// only is the -only list of the order-services process attached to
	// the agent; empty starts none.
	only string
	// flags are more order-services flags, such as -delay.
	flags []string
}

// clusterOptions says how to run a test cluster.
type clusterOptions struct {
	// servers is how many servers form the cluster (-bootstrap-expect).
	servers int
	// clients are the client agents, each with its services.
	clients []clientSpec
	// serverArgs are more agent flags for every server, such as
	// -breakers FILE.
	serverArgs []string
	// lab, when set, runs every agent and its services on its own host
	// of the network lab (named as the agent) instead of on loopback.
	lab *netLab
	// prepareServer, when set, is called with each server's data dir
	// before the server starts (to mount a file system there).
	prepareServer func(dataDir string)
}

// cluster is a running test cluster.
type cluster struct {
	t       *testing.T
	dir     string
	opts    clusterOptions
	servers []*clusterAgent
	clients []*clusterAgent
	// services lists every order-services process, by the agent it is
	// attached to.
	services map[string][]*process
	// journal is the file every service appends its executions to.
	journal string
}

// clusterAgent is one agent process of a test cluster. It can be killed
// and started again on the same data dir and ports.
type clusterAgent struct {
	t      *testing.T
	name   string
	server bool
	// args are the agent's flags but the ports; a restart reuses them.
	args    []string
	dataDir string
	logPath string
	// The ports of the first start, reused by restarts: local API, RPC,
	// gossip, Raft (servers).
	httpPort, rpcPort, gossipPort, raftPort int
	// Addresses from the "agent started" line.
	api, rpc, gossip, raft string
	proc                   *process
	starts                 int
	// host is the agent's host in the network lab; nil on loopback.
	host *netHost
}

// startCluster starts servers Raft servers and one client agent per
// spec, each with its services, and returns once the servers have
// elected a leader, every agent serves, and every server's registry
// lists the capabilities the services offer.
func startCluster(t *testing.T, servers int, clients []clientSpec) *cluster {
	t.Helper()
	return startClusterWith(t, clusterOptions{servers: servers, clients: clients})
}

// startClusterWith is startCluster with more options.
func startClusterWith(t *testing.T, opts clusterOptions) *cluster {
	t.Helper()
	c := newCluster(t, opts)
	for i := range opts.servers {
		name := fmt.Sprintf("server-%d", i)
		if opts.prepareServer != nil {
			opts.prepareServer(filepath.Join(c.dir, name, "data"))
		}
		c.addServer(name, "-bootstrap-expect", strconv.Itoa(opts.servers))
	}
	c.waitLeader(t, 30*time.Second)
	for _, s := range c.servers {
		s.waitServing(30 * time.Second)
	}
	for _, spec := range opts.clients {
		c.addClient(spec)
	}
	c.waitCapabilities(t, 30*time.Second, c.expectedProviders())
	return c
}

// newCluster prepares a cluster with nothing running yet.
func newCluster(t *testing.T, opts clusterOptions) *cluster {
	dir := t.TempDir()
	return &cluster{t: t, dir: dir, opts: opts, services: map[string][]*process{}, journal: filepath.Join(dir, "executions.jsonl")}
}

// newAgent prepares an agent named name with its data dir in the
// cluster's directory; args are its role flags (-server, -join, ...).
func (c *cluster) newAgent(name string, server bool, args ...string) *clusterAgent {
	a := &clusterAgent{
		t: c.t, name: name, server: server,
		dataDir: filepath.Join(c.dir, name, "data"),
		logPath: filepath.Join(c.dir, name+".log"),
	}
	a.args = []string{"agent", "-node", name, "-data-dir", a.dataDir, "-dev-timing", "-log-format", "json"}
	if server {
		a.args = append(a.args, "-server")
	}
	if c.opts.lab != nil {
		a.host = c.opts.lab.host(name)
		a.args = append(a.args, a.host.agentArgs()...)
	}
	a.args = append(a.args, args...)
	return a
}

// addServer starts a server with the servers' flags and args (such as
// -bootstrap-expect N), joined to the first server's gossip address
// unless it is the first. It does not wait for a leader.
func (c *cluster) addServer(name string, args ...string) *clusterAgent {
	c.t.Helper()
	args = append(slices.Clone(c.opts.serverArgs), args...)
	if len(c.servers) > 0 {
		args = append(args, "-join", c.servers[0].gossip)
	}
	a := c.newAgent(name, true, args...)
	a.start()
	c.servers = append(c.servers, a)
	return a
}

// addClient starts a client agent joined to every server, waits until it
// serves, and starts its services.
func (c *cluster) addClient(spec clientSpec) *clusterAgent {
	c.t.Helper()
	var joins []string
	for _, s := range c.servers {
		joins = append(joins, s.gossip)
	}
	a := c.newAgent(spec.name, false, "-join", strings.Join(joins, ","))
	a.start()
	a.waitServing(30 * time.Second)
	c.clients = append(c.clients, a)
	if spec.only != "" {
		c.startService(a, spec.only, spec.flags...)
	}
	return a
}

// startService starts order-services attached to agent a, offering only,
// journaling to the cluster's journal.
func (c *cluster) startService(a *clusterAgent, only string, flags ...string) *process {
	c.t.Helper()
	n := len(c.services[a.name]) + 1
	name := fmt.Sprintf("service %s@%s", only, a.name)
	logPath := filepath.Join(c.dir, fmt.Sprintf("service-%s-%d.log", a.name, n))
	args := append([]string{"-addr", a.api, "-only", only, "-log", c.journal, "-log-level", "debug"}, flags...)
	bin, args := a.host.command(servicesBin, args)
	p := startProcess(c.t, name, bin, args, logPath, nil)
	c.services[a.name] = append(c.services[a.name], p)
	return p
}

// client returns the client agent named name.
func (c *cluster) client(name string) *clusterAgent {
	c.t.Helper()
	for _, a := range c.clients {
		if a.name == name {
			return a
		}
	}
	c.t.Fatalf("no client agent %q", name)
	return nil
}

// agentOfPID maps the pid of every service process to the agent it is
// attached to.
func (c *cluster) agentOfPID() map[int]string {
	out := map[int]string{}
	for agent, ps := range c.services {
		for _, p := range ps {
			out[p.cmd.Process.Pid] = agent
		}
	}
	return out
}

// expectedProviders is, for every capability the clients' services offer,
// the agents that offer it.
func (c *cluster) expectedProviders() map[string][]string {
	out := map[string][]string{}
	for _, spec := range c.opts.clients {
		if spec.only == "" {
			continue
		}
		caps, err := capabilitiesOf(spec.only)
		if err != nil {
			c.t.Fatal(err)
		}
		for _, cp := range caps {
			out[cp] = append(out[cp], spec.name)
		}
	}
	for _, as := range out {
		sort.Strings(as)
	}
	return out
}

// allCapabilities are the order services' capabilities, by system.
var allCapabilities = []string{"orders.validate", "inventory.reserve", "payments.charge", "shipping.book", "notifications.email"}

// capabilitiesOf resolves an order-services -only list as the services
// do: capability names, or system names standing for all of theirs.
func capabilitiesOf(only string) ([]string, error) {
	var out []string
	for _, name := range strings.Split(only, ",") {
		matched := false
		for _, c := range allCapabilities {
			if c == name || strings.HasPrefix(c, name+".") {
				matched = true
				out = append(out, c)
			}
		}
		if !matched {
			return nil, fmt.Errorf("-only %q: unknown capability %q", only, name)
		}
	}
	return out, nil
}

// waitCapabilities waits until every live server's registry lists, for
// each capability of want, exactly the agents want names, so that
// whichever server leads can dispatch to them.
func (c *cluster) waitCapabilities(t *testing.T, timeout time.Duration, want map[string][]string) {
	t.Helper()
	waitFor(t, timeout, fmt.Sprintf("every server lists the providers %v", want), func(ctx context.Context) (bool, string, error) {
		for _, s := range c.liveServers() {
			res, err := s.cluster().Capabilities(ctx, connect.NewRequest(&taskerv1.CapabilitiesRequest{}))
			if err != nil {
				return false, fmt.Sprintf("%s: %v", s.name, err), nil
			}
			got := providersOf(res.Msg)
			for cp, agents := range want {
				if !slices.Equal(got[cp], agents) {
					return false, fmt.Sprintf("%s lists %v", s.name, got), nil
				}
			}
		}
		return true, "", nil
	})
}

// providersOf maps each capability to the sorted names of the agents
// offering it.
func providersOf(res *taskerv1.CapabilitiesResponse) map[string][]string {
	out := map[string][]string{}
	for _, cp := range res.GetCapabilities() {
		for _, p := range cp.GetProviders() {
			out[cp.GetName()] = append(out[cp.GetName()], p.GetAgent())
		}
		sort.Strings(out[cp.GetName()])
	}
	return out
}

// liveServers lists the servers whose process is running.
func (c *cluster) liveServers() []*clusterAgent {
	var out []*clusterAgent
	for _, s := range c.servers {
		if s.proc != nil && !s.proc.exited() {
			out = append(out, s)
		}
	}
	return out
}

// raftViews asks every live server for its own view of the Raft group
// (RaftPeers is answered by the server asked, not forwarded). Servers that
// do not answer are left out.
func (c *cluster) raftViews(ctx context.Context, servers []*clusterAgent) map[string]*taskerv1.RaftPeersResponse {
	views, _ := c.raftViewsErr(ctx, servers)
	return views
}

// raftViewsErr is raftViews, with the errors of the servers that did not
// answer, rendered.
func (c *cluster) raftViewsErr(ctx context.Context, servers []*clusterAgent) (map[string]*taskerv1.RaftPeersResponse, string) {
	out := map[string]*taskerv1.RaftPeersResponse{}
	var errs []string
	for _, s := range servers {
		if s.proc == nil || s.proc.exited() {
			continue
		}
		res, err := s.cluster().RaftPeers(ctx, connect.NewRequest(&taskerv1.RaftPeersRequest{}))
		if err != nil {
			errs = append(errs, fmt.Sprintf("[%s: %v]", s.name, err))
			continue
		}
		out[s.name] = res.Msg
	}
	return out, strings.Join(errs, " ")
}

// agreedLeader returns the leader the views agree on: exactly one server
// says it leads, and every view names it. "" otherwise.
func agreedLeader(views map[string]*taskerv1.RaftPeersResponse) string {
	claims := selfLeaders(views)
	if len(claims) != 1 {
		return ""
	}
	for _, v := range views {
		if v.GetLeader() != claims[0] {
			return ""
		}
	}
	return claims[0]
}

// selfLeaders lists the servers whose own view says they lead.
func selfLeaders(views map[string]*taskerv1.RaftPeersResponse) []string {
	var out []string
	for name, v := range views {
		if v.GetLeader() == name {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// waitLeader waits until the live servers agree on a leader and returns
// votersWhole reports whether the servers agree on a leader and each
// counts every server as a voter (the autopilot removes a silent server
// and adds it back once it answers); if not, what they see. It returns
// the views it judged.
func (c *cluster) votersWhole(ctx context.Context) (map[string]*taskerv1.RaftPeersResponse, bool, string) {
	views, errs := c.raftViewsErr(ctx, c.servers)
	if agreedLeader(views) == "" || len(views) != len(c.servers) {
		return views, false, describeViews(views) + " " + errs
	}
	for _, v := range views {
		voters := 0
		for _, p := range v.GetPeers() {
			if p.GetVoter() {
				voters++
			}
		}
		if voters != len(c.servers) {
			return views, false, "not every server is a voter: " + describeViews(views)
		}
	}
	return views, true, ""
}

// waitVoters waits until votersWhole holds, and returns how long that took.
func (c *cluster) waitVoters(t *testing.T, timeout time.Duration) time.Duration {
	t.Helper()
	return waitFor(t, timeout, "every server is a voter under one leader", func(ctx context.Context) (bool, string, error) {
		_, ok, state := c.votersWhole(ctx)
		return ok, state, nil
	})
}

// its index in c.servers.
func (c *cluster) waitLeader(t *testing.T, timeout time.Duration) int {
	t.Helper()
	return c.waitLeaderOther(t, timeout, "")
}

// waitLeaderOther waits until the live servers agree on a leader other
// than not (a server's name, or "") and returns its index.
func (c *cluster) waitLeaderOther(t *testing.T, timeout time.Duration, not string) int {
	t.Helper()
	idx := -1
	what := "the servers agree on a leader"
	if not != "" {
		what += " other than " + not
	}
	waitFor(t, timeout, what, func(ctx context.Context) (bool, string, error) {
		views, errs := c.raftViewsErr(ctx, c.servers)
		leader := agreedLeader(views)
		if leader == "" || leader == not {
			return false, describeViews(views) + " " + errs, nil
		}
		for i, s := range c.servers {
			if s.name == leader {
				idx = i
				return true, "", nil
			}
		}
		return false, describeViews(views) + " " + errs, nil
	})
	return idx
}

// leaderIndex returns the index of the current leader in c.servers,
// waiting a little for one.
func (c *cluster) leaderIndex(t *testing.T) int {
	t.Helper()
	return c.waitLeader(t, 10*time.Second)
}

// describeViews renders what the servers say about the Raft group, for
// failure messages.
func describeViews(views map[string]*taskerv1.RaftPeersResponse) string {
	names := make([]string, 0, len(views))
	for n := range views {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "no server answered"
	}
	var b strings.Builder
	for _, n := range names {
		v := views[n]
		var peers []string
		for _, p := range v.GetPeers() {
			peers = append(peers, fmt.Sprintf("%s(voter=%v)", p.GetId(), p.GetVoter()))
		}
		fmt.Fprintf(&b, "[%s: leader %q term %d peers %v] ", n, v.GetLeader(), v.GetTerm(), peers)
	}
	return b.String()
}

// start runs the agent, on the ports of its first start if it had one,
// and returns once it logged "agent started" (a server of a cluster that
// has not formed yet does not serve until it has).
func (a *clusterAgent) start() {
	t := a.t
	t.Helper()
	a.starts++
	watch, found := startedWatcher()
	args := append(slices.Clone(a.args),
		"-http-port", strconv.Itoa(a.httpPort), "-rpc-port", strconv.Itoa(a.rpcPort), "-gossip-port", strconv.Itoa(a.gossipPort))
	if a.server {
		args = append(args, "-raft-port", strconv.Itoa(a.raftPort))
	}
	bin, args := a.host.command(taskerBin, args)
	a.proc = startProcess(t, fmt.Sprintf("%s (start %d)", a.name, a.starts), bin, args, a.logPath, watch)
	var s started
	select {
	case s = <-found:
	case <-a.proc.done:
		t.Fatalf("%s exited before it started (%v):\n%s", a.name, a.proc.err, a.proc.tail(20))
	case <-time.After(30 * time.Second):
		t.Fatalf("no \"agent started\" log line from %s within 30s:\n%s", a.name, a.proc.tail(20))
	}
	a.api, a.rpc, a.gossip, a.raft = s.API, s.RPC, s.Gossip, s.Raft
	if a.starts == 1 {
		a.httpPort, a.rpcPort, a.gossipPort = portOf(t, s.API), portOf(t, s.RPC), portOf(t, s.Gossip)
		if a.server {
			a.raftPort = portOf(t, s.Raft)
		}
	}
}

// waitServing waits until the agent's health check reports SERVING: it
// knows a leader (a server) or a live server (a client agent). On timeout
// the failure shows the agent's health and the members it knows.
func (a *clusterAgent) waitServing(timeout time.Duration) {
	a.t.Helper()
	health := grpchealth.NewClient(h2cClient(), a.api)
	waitFor(a.t, timeout, a.name+" reports SERVING", func(ctx context.Context) (bool, string, error) {
		if a.proc.exited() {
			return false, "", fmt.Errorf("%s exited: %v\n%s", a.name, a.proc.err, a.proc.tail(20))
		}
		res, err := health.Check(ctx, &grpchealth.CheckRequest{})
		if err == nil && res.Status == grpchealth.StatusServing {
			return true, "", nil
		}
		state := fmt.Sprintf("health %v (err %v)", res, err)
		if ms, err := a.cluster().Members(ctx, connect.NewRequest(&taskerv1.MembersRequest{})); err == nil {
			var view []string
			for _, m := range ms.Msg.GetMembers() {
				view = append(view, fmt.Sprintf("%s(%s,%s)", m.GetName(), m.GetRole(), m.GetStatus()))
			}
			state += fmt.Sprintf("; members it knows: %v", view)
		}
		return false, state, nil
	})
}

// kill kills the agent with SIGKILL and waits until it is gone.
func (a *clusterAgent) kill() {
	a.t.Helper()
	a.proc.signal(a.t, syscall.SIGKILL)
	if code := a.proc.wait(a.t, 10*time.Second); code != -1 {
		a.t.Fatalf("%s killed with SIGKILL exited with %d", a.name, code)
	}
}

// cluster is a ClusterService client of the agent's local API.
func (a *clusterAgent) cluster() taskerv1connect.ClusterServiceClient {
	return taskerv1connect.NewClusterServiceClient(h2cClient(), a.api)
}

// staleWorkflows is a WorkflowService client of the agent's local API
// whose reads a server answers from its own state (Tasker-Consistency:
// stale), leader or not.
func (a *clusterAgent) staleWorkflows() taskerv1connect.WorkflowServiceClient {
	return taskerv1connect.NewWorkflowServiceClient(h2cClient(), a.api, connect.WithInterceptors(staleReads{}))
}

// staleReads sets Tasker-Consistency: stale on every call.
type staleReads struct{}

func (staleReads) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Tasker-Consistency", "stale")
		return next(ctx, req)
	}
}

func (staleReads) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (staleReads) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// pollUntil polls cond every 50ms until it reports true (true) or timeout
// passes (false). Each call of cond gets a context of 1s to 5s.
func pollUntil(timeout time.Duration, cond func(ctx context.Context) bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), max(time.Second, min(5*time.Second, time.Until(deadline))))
		ok := cond(ctx)
		cancel()
		if ok {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// exitCode is the exit code of a process that has exited: -1 when a
// signal killed it.
func (p *process) exitCode() int {
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee):
		return ee.ExitCode()
	}
	return -1
}

// waitFor polls cond every 50ms until it reports true, failing the test
// when it returns an error or timeout passes; the failure shows the last
// state cond described. Each call of cond gets a context of 1s to 5s.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func(ctx context.Context) (ok bool, state string, err error)) time.Duration {
	t.Helper()
	began := time.Now()
	deadline := began.Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), max(time.Second, min(5*time.Second, time.Until(deadline))))
		ok, state, err := cond(ctx)
		cancel()
		if err != nil {
			t.Fatalf("waiting until %s: %v", what, err)
		}
		if ok {
			return time.Since(began)
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s; last seen: %s", timeout, what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitComplete waits until every task of the batch is complete, failing
// at once if one is blocked in error; on timeout the failure says where
// the unfinished steps are (state, agent, why they wait, last error).
func (b *batch) waitComplete(t *testing.T, timeout time.Duration) []*taskerv1.Task {
	t.Helper()
	var tasks []*taskerv1.Task
	last := "no answer yet"
	waitFor(t, timeout, "every task is complete", func(ctx context.Context) (bool, string, error) {
		var err error
		if tasks, err = b.tasks(ctx); err != nil {
			return false, fmt.Sprintf("%s; then: %v", last, err), nil // no leader for a moment
		}
		for _, task := range tasks {
			if task.GetState() == taskerv1.TaskState_TASK_STATE_ERROR {
				return false, "", fmt.Errorf("task %s is blocked in error: %s", task.GetId(), describeSteps(task))
			}
		}
		done, _ := count(tasks, taskerv1.TaskState_TASK_STATE_COMPLETE, 0)
		if done == len(tasks) {
			return true, "", nil
		}
		last = fmt.Sprintf("%d of %d complete;", done, len(tasks))
		shown := 0
		for _, task := range tasks {
			if task.GetState() != taskerv1.TaskState_TASK_STATE_COMPLETE && shown < 3 {
				shown++
				last += " " + describeSteps(task)
			}
		}
		return false, last, nil
	})
	return tasks
}

// describeSteps renders a task's unfinished steps for failure messages.
func describeSteps(task *taskerv1.Task) string {
	var parts []string
	for _, st := range task.GetSteps() {
		if st.GetState() == taskerv1.StepState_STEP_STATE_COMPLETE {
			continue
		}
		s := fmt.Sprintf("%s=%s(attempts %d/%d", st.GetName(), strings.TrimPrefix(st.GetState().String(), "STEP_STATE_"), st.GetAttempts(), st.GetMaxAttempts())
		if st.GetAgent() != "" {
			s += " on " + st.GetAgent()
		}
		if st.GetWaiting() != "" {
			s += ", waiting: " + st.GetWaiting()
		}
		if e := st.GetLastError(); e != nil {
			s += fmt.Sprintf(", last error %s: %s", e.GetCode(), e.GetMessage())
		}
		parts = append(parts, s+")")
	}
	return fmt.Sprintf("{%s %s: %s}", task.GetId(), strings.TrimPrefix(task.GetState().String(), "TASK_STATE_"), strings.Join(parts, ", "))
}
