package client_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/proto/tasker/v1/taskerv1connect"
	"github.com/tasker-run/tasker/sdk/go/client"
)

// authSeen answers every WorkflowService call Unimplemented.
type authSeen struct {
	taskerv1connect.UnimplementedWorkflowServiceHandler
}

// TestTokenIsSentAsBearer: an app's token, from Options.Token or else
// TASKER_TOKEN, reaches the sidecar in the standard Authorization header.
func TestTokenIsSentAsBearer(t *testing.T) {
	seen := make(chan string, 4)
	mux := http.NewServeMux()
	path, h := taskerv1connect.NewWorkflowServiceHandler(authSeen{})
	mux.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("Authorization")
		h.ServeHTTP(w, r)
	}))
	srv := httptest.NewUnstartedServer(mux)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	defer srv.Close()

	for _, tc := range []struct {
		name, opt, env, want string
	}{
		{"option", "tasker_opt", "tasker_env", "Bearer tasker_opt"},
		{"environment", "", "tasker_env", "Bearer tasker_env"},
		{"none", "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("TASKER_TOKEN", tc.env)
			c := client.New(client.Options{Addr: srv.URL, Token: tc.opt})
			_, err := c.GetTask(context.Background(), "tsk_1")
			if connect.CodeOf(err) != connect.CodeUnimplemented {
				t.Fatalf("call: %v", err)
			}
			if got := <-seen; got != tc.want {
				t.Fatalf("Authorization %q, want %q", got, tc.want)
			}
		})
	}
}
