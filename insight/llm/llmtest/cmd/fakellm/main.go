// Command fakellm serves a scripted OpenAI-compatible chat completions API
// for end-to-end tests. The script is a JSON array of llmtest.Reply
// ({"content": "...", "status": 429, "header": {"Retry-After": "1"}});
// the last reply repeats once it runs out. It prints its base URL
// (http://127.0.0.1:port/v1) on the first line of stdout.
//
//	go run ./insight/llm/llmtest/cmd/fakellm -script replies.json -addr 127.0.0.1:0
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"

	"github.com/tasker-run/tasker/insight/llm/llmtest"
)

func main() {
	script := flag.String("script", "", "JSON file holding an array of replies (required)")
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	flag.Parse()
	if err := run(*script, *addr); err != nil {
		fmt.Fprintln(os.Stderr, "fakellm:", err)
		os.Exit(1)
	}
}

func run(script, addr string) error {
	if script == "" {
		return fmt.Errorf("-script is required: a JSON array of replies")
	}
	data, err := os.ReadFile(script)
	if err != nil {
		return fmt.Errorf("reading the script: %w", err)
	}
	var replies []llmtest.Reply
	if err := json.Unmarshal(data, &replies); err != nil {
		return fmt.Errorf("script %s is not a JSON array of replies: %w", script, err)
	}
	if len(replies) == 0 {
		return fmt.Errorf("script %s has no replies", script)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	h := llmtest.NewHandler(func(format string, args ...any) { log.Error(fmt.Sprintf(format, args...)) }, replies...)
	fmt.Printf("http://%s/v1\n", ln.Addr())
	return http.Serve(ln, h)
}
