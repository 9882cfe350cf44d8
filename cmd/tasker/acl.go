package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// tokenEnv names the environment variable the ACL token comes from when
// -token is not given.
const tokenEnv = "TASKER_TOKEN"

// tokenValue is the token the flags ask for: -token, else $TASKER_TOKEN.
func (f apiFlags) tokenValue() string {
	if f.token != nil && *f.token != "" {
		return *f.token
	}
	return os.Getenv(tokenEnv)
}

func aclCommand() command {
	return group("acl", "manage ACL tokens", `
Manages the tokens API calls carry when the agents run with -acl
(docs/acl.md). Every subcommand but whoami needs a management token
(-token or $TASKER_TOKEN): the acl_initial_management_token of the servers,
or one created with -policy management.
`, aclTokenCommand(), aclWhoAmICommand())
}

func aclTokenCommand() command {
	return group("acl token", "create, list and delete ACL tokens", `
Tokens are stored in the cluster (replicated through Raft) as the SHA-256
of their secret: the secret is printed once, by create, and cannot be
shown again. A deleted token is refused at once by servers and within
acl_token_ttl (30s by default) by client agents.
`, aclTokenCreateCommand(), aclTokenListCommand(), aclTokenDeleteCommand())
}

const aclTokenCreateUsage = `
Usage: tasker acl token create -policy POLICY [-capability PATTERN]... [-workflow PATTERN]... [-description TEXT] [-addr URL] [-token TOKEN] [-o table|json]

Creates a token and prints its accessor id (its public name, for list and
delete) and its secret (what callers send as 'Authorization: Bearer
SECRET'). The secret is shown only now.

Policies:
  management  everything: cluster operations, dead-letter replay, tokens
  writer      apply workflows, start, cancel, retry and resolve, and read
  reader      read workflows, tasks, events, dead letters and members
  app         serve the capabilities matching -capability (required),
              start the workflows matching -workflow (namespace/name), read
  agent       what agents send each other (acl_agent_token)

Patterns use * and ?: -capability 'payments.*' -workflow 'shop/order-*'.
Both flags repeat.
` + apiFlagsHelp + apiExit

func aclTokenCreateCommand() command {
	return command{name: "acl token create", synopsis: "create a token and print its secret, once", usage: aclTokenCreateUsage,
		run: func(args []string, stdout, stderr io.Writer) int {
			c := aclTokenCreateCommand()
			fs := flags(c, stderr)
			api := addAPIFlags(fs)
			policy := fs.String("policy", "", "management, writer, reader, app or agent")
			desc := fs.String("description", "", "what the token is for")
			var caps, wfs listFlag
			fs.Var(&caps, "capability", "capability `pattern` an app token serves (repeatable)")
			fs.Var(&wfs, "workflow", "workflow `pattern` (namespace/name) an app token may start (repeatable)")
			pos, code, ok := parse(c, fs, args, stdout, stderr)
			if !ok {
				return code
			}
			if len(pos) > 0 {
				return usageError(stderr, c, "unexpected argument %q", pos[0])
			}
			if *policy == "" {
				return usageError(stderr, c, "-policy is required: management, writer, reader, app or agent")
			}
			cn, code, ok := api.connect(c, stdout, stderr)
			if !ok {
				return code
			}
			ctx, cancel := cn.call()
			defer cancel()
			resp, err := cn.acl.CreateToken(ctx, connect.NewRequest(&taskerv1.CreateTokenRequest{
				Policy: *policy, Capabilities: caps, Workflows: wfs, Description: *desc,
			}))
			if err != nil {
				return cn.fail(err)
			}
			if cn.json() {
				return cn.writeProto(resp.Msg, false)
			}
			t := resp.Msg.GetToken()
			tw := table(stdout)
			row(tw, "AccessorID:", t.GetAccessorId())
			row(tw, "SecretID:", resp.Msg.GetSecret())
			row(tw, "Policy:", t.GetPolicy())
			if len(t.GetCapabilities()) > 0 {
				row(tw, "Capabilities:", strings.Join(t.GetCapabilities(), ", "))
			}
			if len(t.GetWorkflows()) > 0 {
				row(tw, "Workflows:", strings.Join(t.GetWorkflows(), ", "))
			}
			if t.GetDescription() != "" {
				row(tw, "Description:", t.GetDescription())
			}
			tw.Flush()
			fmt.Fprintln(stderr, "The secret is shown only now: store it where the caller reads it (TASKER_TOKEN).")
			return exitOK
		}}
}

const aclTokenListUsage = `
Usage: tasker acl token list [-addr URL] [-token TOKEN] [-o table|json]

Lists the tokens stored in the cluster, oldest first: ACCESSOR POLICY
SCOPE (an app token's capabilities and workflows) CREATED DESCRIPTION.
Secrets are not stored and never listed. Tokens from agent configuration
(acl_initial_management_token, acl_agent_token) are not listed.
` + apiFlagsHelp + apiExit

func aclTokenListCommand() command {
	return command{name: "acl token list", synopsis: "list the stored tokens (never their secrets)", usage: aclTokenListUsage,
		run: func(args []string, stdout, stderr io.Writer) int {
			cn, code, ok := connectNoArgs(aclTokenListCommand(), args, stdout, stderr)
			if !ok {
				return code
			}
			ctx, cancel := cn.call()
			defer cancel()
			resp, err := cn.acl.ListTokens(ctx, connect.NewRequest(&taskerv1.ListTokensRequest{}))
			if err != nil {
				return cn.fail(err)
			}
			if cn.json() {
				return cn.writeProto(resp.Msg, false)
			}
			tw := table(stdout)
			row(tw, "ACCESSOR", "POLICY", "SCOPE", "CREATED", "DESCRIPTION")
			for _, t := range resp.Msg.GetTokens() {
				row(tw, t.GetAccessorId(), t.GetPolicy(), tokenScope(t), t.GetCreatedAt().AsTime().Format(time.RFC3339), t.GetDescription())
			}
			tw.Flush()
			return exitOK
		}}
}

// tokenScope is an app token's capabilities and workflows, in one cell.
func tokenScope(t *taskerv1.AclToken) string {
	if len(t.GetCapabilities()) == 0 && len(t.GetWorkflows()) == 0 {
		return "-"
	}
	s := "capabilities " + strings.Join(t.GetCapabilities(), ",")
	if len(t.GetWorkflows()) > 0 {
		s += "; start " + strings.Join(t.GetWorkflows(), ",")
	}
	return s
}

const aclTokenDeleteUsage = `
Usage: tasker acl token delete ACCESSOR [-addr URL] [-token TOKEN] [-o table|json]

Deletes the token with accessor id ACCESSOR (as 'tasker acl token list'
shows it). Servers refuse it at once, client agents within acl_token_ttl.
` + apiFlagsHelp + apiExit

func aclTokenDeleteCommand() command {
	return command{name: "acl token delete", synopsis: "delete a token by accessor id", usage: aclTokenDeleteUsage,
		run: func(args []string, stdout, stderr io.Writer) int {
			c := aclTokenDeleteCommand()
			fs := flags(c, stderr)
			api := addAPIFlags(fs)
			pos, code, ok := parse(c, fs, args, stdout, stderr)
			if !ok {
				return code
			}
			if len(pos) != 1 {
				return usageError(stderr, c, "want one ACCESSOR id (tasker acl token list), got %d arguments", len(pos))
			}
			cn, code, ok := api.connect(c, stdout, stderr)
			if !ok {
				return code
			}
			ctx, cancel := cn.call()
			defer cancel()
			if _, err := cn.acl.DeleteToken(ctx, connect.NewRequest(&taskerv1.DeleteTokenRequest{AccessorId: pos[0]})); err != nil {
				return cn.fail(err)
			}
			if cn.json() {
				return cn.writeProto(&taskerv1.DeleteTokenResponse{}, false)
			}
			fmt.Fprintf(stdout, "Token %s deleted.\n", pos[0])
			return exitOK
		}}
}

const aclWhoAmIUsage = `
Usage: tasker acl whoami [-addr URL] [-token TOKEN] [-o table|json]

Describes the token the command sends: its accessor id, policy and scope.
Any valid token may ask.
` + apiFlagsHelp + apiExit

func aclWhoAmICommand() command {
	return command{name: "acl whoami", synopsis: "describe the token you are using", usage: aclWhoAmIUsage,
		run: func(args []string, stdout, stderr io.Writer) int {
			cn, code, ok := connectNoArgs(aclWhoAmICommand(), args, stdout, stderr)
			if !ok {
				return code
			}
			ctx, cancel := cn.call()
			defer cancel()
			resp, err := cn.acl.WhoAmI(ctx, connect.NewRequest(&taskerv1.WhoAmIRequest{}))
			if err != nil {
				return cn.fail(err)
			}
			if cn.json() {
				return cn.writeProto(resp.Msg, false)
			}
			t := resp.Msg.GetToken()
			tw := table(stdout)
			row(tw, "AccessorID:", t.GetAccessorId())
			row(tw, "Policy:", t.GetPolicy())
			row(tw, "Scope:", tokenScope(t))
			if t.GetDescription() != "" {
				row(tw, "Description:", t.GetDescription())
			}
			tw.Flush()
			return exitOK
		}}
}

// listFlag is a repeatable string flag.
type listFlag []string

var _ flag.Value = (*listFlag)(nil)

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}
