// Package mcpserver serves Tasker to AI assistants over the Model Context
// Protocol (MCP): tools that read and operate workflows, tasks, steps,
// dead letters, the cluster, the insight analyzers and proposals, two
// resource templates, and a prompt that walks an assistant through a
// failed task.
//
// The server is an API client like the CLI: every tool is one or a few
// calls of the agent's local Connect API through [Clients], so ACLs,
// validation and error messages are the API's, unchanged. The same server
// runs as `tasker mcp` (stdio, a separate process talking to an agent)
// and inside the agent at /mcp (streamable HTTP, its clients pointing at
// the agent's own local API).
//
// # Tokens
//
// Each API call carries, in order of precedence: the operator_token of an
// approve, reject or rollback call (for that call only); the token of the
// MCP request that carried the call (its Authorization: Bearer or
// X-Tasker-Token header, over HTTP); the token [NewClients] was given.
// Approvals, rejections and rollbacks always need an explicit
// operator_token, so that an assistant working under an ordinary token
// cannot approve its own proposals.
//
// # Outputs
//
// A tool's structured content is the API's response message as JSON, as
// protojson writes it with the proto field names (task_id, input_json),
// the same JSON `tasker ... -o json` prints; its output schema names the
// message. Only list_failures, which joins several calls, returns a
// struct of its own. Every result also has a one-line text summary. An
// error of the API is a tool error (IsError, with the API's message), not
// a protocol error, so that an assistant sees "task not found" and can
// correct itself.
package mcpserver
