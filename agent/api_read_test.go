package agent

import (
	"context"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

func TestWorkflowVersionsAndReads(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	ctx := context.Background()
	applyQuick(t, ta)
	v2 := strings.Replace(quick, "version: 1.0.0", "version: 1.10.0", 1)
	v3 := strings.Replace(quick, "version: 1.0.0", "version: 1.9.0", 1)
	for _, m := range []string{v2, v3} {
		if _, err := ta.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: m})); err != nil {
			t.Fatal(err)
		}
	}
	// Same version, same content: a no-op; other content: refused.
	r, err := ta.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: quick}))
	if err != nil || r.Msg.GetCreated() {
		t.Fatalf("re-apply: %v created=%v", err, r.Msg.GetCreated())
	}
	_, err = ta.wf.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: quick + "description: changed\n"}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "new version") {
		t.Fatalf("same version, other content: %v", err)
	}
	// The latest is the highest semantic version, not the last applied.
	g, err := ta.wf.GetWorkflow(ctx, connect.NewRequest(&taskerv1.GetWorkflowRequest{Name: "quick"}))
	if err != nil || g.Msg.GetWorkflow().GetVersion() != "1.10.0" {
		t.Fatalf("latest: %v %s", err, g.Msg.GetWorkflow().GetVersion())
	}
	if got := strings.Join(g.Msg.GetWorkflow().GetVersions(), ","); got != "1.0.0,1.9.0,1.10.0" {
		t.Fatalf("versions %s", got)
	}
	g, err = ta.wf.GetWorkflow(ctx, connect.NewRequest(&taskerv1.GetWorkflowRequest{Name: "quick", Version: "1.0.0"}))
	if err != nil || g.Msg.GetWorkflow().GetManifest() != quick || len(g.Msg.GetWorkflow().GetSteps()) != 2 {
		t.Fatalf("get 1.0.0: %v", err)
	}
	_, err = ta.wf.GetWorkflow(ctx, connect.NewRequest(&taskerv1.GetWorkflowRequest{Name: "quick", Version: "9.9.9"}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("unknown version: %v", err)
	}
	l, err := ta.wf.ListWorkflows(ctx, connect.NewRequest(&taskerv1.ListWorkflowsRequest{}))
	if err != nil || len(l.Msg.GetWorkflows()) != 1 || l.Msg.GetWorkflows()[0].GetManifest() != "" {
		t.Fatalf("list: %v %d", err, len(l.Msg.GetWorkflows()))
	}
	// A task keeps the version it started with.
	s, err := ta.wf.StartTask(ctx, connect.NewRequest(&taskerv1.StartTaskRequest{Workflow: "quick", Version: "1.0.0"}))
	if err != nil || s.Msg.GetTask().GetVersion() != "1.0.0" {
		t.Fatalf("start on 1.0.0: %v", err)
	}
}

func TestListTasksFiltersAndPages(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	ctx := context.Background()
	applyQuick(t, ta)
	var ids []string
	for range 7 {
		ids = append(ids, startQuick(t, ta, ""))
	}
	if _, err := ta.wf.CancelTask(ctx, connect.NewRequest(&taskerv1.CancelTaskRequest{Id: ids[0]})); err != nil {
		t.Fatal(err)
	}
	var got []string
	token := ""
	for range 10 {
		r, err := ta.wf.ListTasks(ctx, connect.NewRequest(&taskerv1.ListTasksRequest{PageSize: 3, PageToken: token}))
		if err != nil {
			t.Fatal(err)
		}
		for _, tk := range r.Msg.GetTasks() {
			got = append(got, tk.GetId())
		}
		if token = r.Msg.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(got) != 7 || got[0] != ids[6] || got[6] != ids[0] {
		t.Fatalf("pages gave %v, want newest first %v", got, ids)
	}
	r, err := ta.wf.ListTasks(ctx, connect.NewRequest(&taskerv1.ListTasksRequest{State: taskerv1.TaskState_TASK_STATE_CANCELLED}))
	if err != nil || len(r.Msg.GetTasks()) != 1 || r.Msg.GetTasks()[0].GetId() != ids[0] {
		t.Fatalf("state filter: %v", err)
	}
	for _, bad := range []*taskerv1.ListTasksRequest{{PageSize: 5000}, {PageToken: "abc"}, {State: 42}} {
		if _, err := ta.wf.ListTasks(ctx, connect.NewRequest(bad)); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("%v: %v, want InvalidArgument", bad, err)
		}
	}
}

func TestClusterHealthAndReflection(t *testing.T) {
	ta := startAgent(t, t.TempDir())
	ctx := context.Background()
	m, err := ta.cl.Members(ctx, connect.NewRequest(&taskerv1.MembersRequest{}))
	if err != nil || len(m.Msg.GetMembers()) != 1 || m.Msg.GetMembers()[0].GetRole() != "server" {
		t.Fatalf("members: %v", err)
	}
	p, err := ta.cl.RaftPeers(ctx, connect.NewRequest(&taskerv1.RaftPeersRequest{}))
	if err != nil || len(p.Msg.GetPeers()) != 1 || !p.Msg.GetPeers()[0].GetLeader() || p.Msg.GetLeader() != "test" {
		t.Fatalf("raft peers: %v %+v", err, p.Msg)
	}
	hc := grpchealth.NewClient(h2c(), ta.Addr(), connect.WithGRPC())
	for _, svc := range []string{"", taskerv1connect.WorkflowServiceName} {
		h, err := hc.Check(ctx, &grpchealth.CheckRequest{Service: svc})
		if err != nil || h.Status != grpchealth.StatusServing {
			t.Fatalf("health of %q: %v %v", svc, err, h)
		}
	}
	rc := grpcreflect.NewClient(h2c(), ta.Addr())
	stream := rc.NewStream(ctx)
	names, err := stream.ListServices()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = stream.Close()
	have := map[string]bool{}
	for _, n := range names {
		have[string(n)] = true
	}
	for _, want := range []string{taskerv1connect.WorkflowServiceName, taskerv1connect.WorkerServiceName, taskerv1connect.ClusterServiceName} {
		if !have[want] {
			t.Errorf("reflection lacks %s (has %v)", want, names)
		}
	}
}
