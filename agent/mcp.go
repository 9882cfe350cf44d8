package agent

import (
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tasker-run/tasker/mcpserver"
)

// mcpPath is where the local API serves the Model Context Protocol.
const mcpPath = "/mcp"

// mcpHandler serves MCP over streamable HTTP. Its tools are clients of
// this agent's own local API, and each API call carries the token of the
// MCP request behind it: ACLs apply to an assistant exactly as to any
// other client.
func (a *Agent) mcpHandler() http.Handler {
	if reason := a.mcpRefusal(); reason != "" {
		a.log.Warn("not serving MCP at "+mcpPath, "reason", reason)
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, reason, http.StatusForbidden)
		})
	}
	clients := mcpserver.NewClients(loopbackClient(), a.selfURL(), "")
	srv, err := mcpserver.New(clients, mcpserver.Options{Version: version, ReadOnly: a.cfg.MCPReadOnly, Logger: a.log.With("component", "mcp")})
	if err != nil {
		// Only clients not built by NewClients fail, which these are not.
		a.log.Error("MCP server", "err", err)
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "the MCP server failed to start: "+err.Error(), http.StatusInternalServerError)
		})
	}
	// Stateless, with JSON answers: the tools never call the client back,
	// each request is authorized by its own header rather than by the
	// session's first, and no open stream holds up a shutdown.
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, &mcp.StreamableHTTPOptions{
		Stateless:    true,
		JSONResponse: true,
		Logger:       a.log.With("component", "mcp"),
	})
}

// mcpRefusal says why MCP must not be served here, or "" when it may be:
// on loopback only local processes reach it; elsewhere only ACLs keep
// whoever reaches the port from driving the cluster through it.
func (a *Agent) mcpRefusal() string {
	ip := net.ParseIP(a.cfg.ClientAddr)
	if (ip != nil && ip.IsLoopback()) || a.cfg.ACLEnabled {
		return ""
	}
	return "MCP is not served: the local API listens on " + a.cfg.ClientAddr + ", which is not a loopback address, and ACLs are off, " +
		"so anyone who can reach it could operate the cluster through an assistant. Turn on ACLs (-acl, docs/acl.md), " +
		"bind the local API to loopback (-client 127.0.0.1), or turn MCP off (-mcp=false)"
}

// selfURL is the base URL of this agent's local API as the agent itself
// reaches it: on loopback when it listens on every address.
func (a *Agent) selfURL() string {
	addr := a.ln.Addr().(*net.TCPAddr)
	host := addr.IP
	if host.IsUnspecified() {
		// 0.0.0.0 and [::] both take connections to 127.0.0.1.
		host = net.IPv4(127, 0, 0, 1)
	}
	return "http://" + net.JoinHostPort(host.String(), strconv.Itoa(addr.Port))
}

// loopbackClient speaks cleartext HTTP/2 to the agent's own API, ignoring
// proxy settings.
func loopbackClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{
		Protocols:   &p,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}}
}
