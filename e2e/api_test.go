package e2e

import (
	"context"
	"slices"
	"testing"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
)

// TestHealthAndReflection checks the endpoints generic gRPC tools rely
// on: the gRPC health check, over gRPC and Connect, and server
// reflection, used the way `buf curl --reflect` and grpcurl use it: list
// the services, fetch a service's descriptors, and call a method knowing
// nothing but what reflection said.
func TestHealthAndReflection(t *testing.T) {
	t.Parallel()
	a := startAgent(t, agentConfig{})
	c := newClient(a.addr)
	if _, err := c.ApplyWorkflow(callCtx(t), exampleWorkflow(t)); err != nil {
		t.Fatal(err)
	}
	hc := h2cClient()

	for name, opts := range map[string][]connect.ClientOption{"grpc": {connect.WithGRPC()}, "connect": nil} {
		health := grpchealth.NewClient(hc, a.addr, opts...)
		for _, service := range []string{"", taskerv1connect.WorkflowServiceName, taskerv1connect.WorkerServiceName} {
			res, err := health.Check(callCtx(t), &grpchealth.CheckRequest{Service: service})
			if err != nil {
				t.Fatalf("%s: health check of %q: %v", name, service, err)
			}
			if res.Status != grpchealth.StatusServing {
				t.Errorf("%s: health of %q is %s, want SERVING", name, service, res.Status)
			}
		}
		if _, err := health.Check(callCtx(t), &grpchealth.CheckRequest{Service: "no.such.Service"}); connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("%s: health check of an unknown service: %v, want NotFound", name, err)
		}
	}

	ctx, cancel := context.WithCancel(callCtx(t))
	defer cancel()
	stream := grpcreflect.NewClient(hc, a.addr, connect.WithGRPC()).NewStream(ctx)
	defer stream.Close()
	services, err := stream.ListServices()
	if err != nil {
		t.Fatalf("reflection: list services: %v", err)
	}
	for _, want := range []string{taskerv1connect.WorkflowServiceName, taskerv1connect.WorkerServiceName, taskerv1connect.ClusterServiceName} {
		if !slices.Contains(services, protoreflect.FullName(want)) {
			t.Errorf("reflection lists %v, without %s", services, want)
		}
	}
	files, err := stream.FileContainingSymbol(taskerv1connect.WorkflowServiceName)
	if err != nil {
		t.Fatalf("reflection: file containing %s: %v", taskerv1connect.WorkflowServiceName, err)
	}
	reg, err := protodesc.NewFiles(&descriptorpb.FileDescriptorSet{File: files})
	if err != nil {
		t.Fatalf("reflection: the descriptors do not form a complete set: %v", err)
	}
	d, err := reg.FindDescriptorByName(taskerv1connect.WorkflowServiceName + ".ListWorkflows")
	if err != nil {
		t.Fatalf("reflection: %v", err)
	}
	method := d.(protoreflect.MethodDescriptor)

	// Call ListWorkflows over gRPC with dynamic messages built from the
	// reflected descriptors alone.
	call := connect.NewClient[dynamicpb.Message, dynamicpb.Message](hc,
		a.addr+"/"+string(method.Parent().FullName())+"/"+string(method.Name()),
		connect.WithGRPC(), connect.WithSchema(method),
		connect.WithResponseInitializer(func(_ connect.Spec, msg any) error {
			*msg.(*dynamicpb.Message) = *dynamicpb.NewMessage(method.Output())
			return nil
		}))
	res, err := call.CallUnary(callCtx(t), connect.NewRequest(dynamicpb.NewMessage(method.Input())))
	if err != nil {
		t.Fatalf("ListWorkflows with reflected descriptors: %v", err)
	}
	workflows := res.Msg.Get(method.Output().Fields().ByName("workflows")).List()
	if workflows.Len() != 1 {
		t.Fatalf("ListWorkflows returned %d workflows, want 1", workflows.Len())
	}
	name := workflows.Get(0).Message().Get(method.Output().Fields().ByName("workflows").Message().Fields().ByName("name")).String()
	if name != "order-fulfilment" {
		t.Errorf("ListWorkflows returned workflow %q, want order-fulfilment", name)
	}
}
