package main

import (
	"fmt"
	"io"
	"strings"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// The -addr and -o flags, described once for every operator command.
const apiFlagsHelp = `
-addr defaults to $TASKER_ADDR, else http://127.0.0.1:7420. -o json
prints the agent's response as JSON (the .proto field names) for scripts.
-token (default $TASKER_TOKEN) is the ACL token, when the agent has ACLs on.
`

// apiExit describes the exit status of the operator commands.
const apiExit = `
Exit status: 0 on success, 1 when the agent refused or could not be
reached, 2 on a usage error.
`

func workflowCommand() command {
	return group("workflow", "apply, list and show workflow definitions on an agent", `
Manages workflow definitions on a running agent: apply a manifest as a new
version, list the workflows, show one.
`, workflowApplyCommand(), workflowListCommand(), workflowGetCommand())
}

const workflowApplyUsage = `
Usage: tasker workflow apply -f FILE [-addr URL] [-o table|json]

Sends a manifest (YAML or JSON; -f - reads standard input) to the agent,
which validates it as 'tasker validate' does and stores it as a new
version of its workflow. Applying a version again with the same content
changes nothing ("unchanged"); the same version with other content is
refused: bump the version.

An invalid manifest is refused with every problem, one per line, as
FILE: PATH (line N): MESSAGE. So is one that no agent offering a step's
capability can run as its app advertises it; a capability no agent
offers yet, or that some agents advertise incompatibly, is only a
warning, printed on standard error as "warning: PATH (line N): MESSAGE".
` + apiFlagsHelp + apiExit

func workflowApplyCommand() command {
	return command{name: "workflow apply", synopsis: "store a manifest as a new workflow version", usage: workflowApplyUsage, run: runWorkflowApply}
}

func runWorkflowApply(args []string, stdout, stderr io.Writer) int {
	c := workflowApplyCommand()
	fs := flags(c, stderr)
	api := addAPIFlags(fs)
	file := fs.String("f", "", "the manifest `FILE`, or - for standard input")
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return usageError(stderr, c, "unexpected argument %q; the manifest goes after -f", pos[0])
	}
	if *file == "" {
		return usageError(stderr, c, "no manifest given: use -f FILE")
	}
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	src, err := readSource(*file)
	if err != nil {
		fmt.Fprintf(stderr, "tasker %s: %v\n", c.name, err)
		return exitFail
	}
	ctx, cancel := cn.call()
	defer cancel()
	resp, err := cn.workflows.ApplyWorkflow(ctx, connect.NewRequest(&taskerv1.ApplyWorkflowRequest{Manifest: string(src)}))
	if err != nil {
		source := *file
		if source == "-" {
			source = "<stdin>"
		}
		return cn.failSource(source, err)
	}
	// On stderr, so that -o json output stays parseable.
	for _, warning := range resp.Msg.GetWarnings() {
		fmt.Fprintf(stderr, "warning: %s\n", warning)
	}
	if cn.json() {
		return cn.writeProto(resp.Msg, false)
	}
	w := resp.Msg.GetWorkflow()
	outcome := "created, " + plural(len(w.Steps), "step")
	if !resp.Msg.Created {
		outcome = "unchanged, already stored with this content"
	}
	fmt.Fprintf(stdout, "%s %s: %s\n", workflowName(w.Namespace, w.Name), w.Version, outcome)
	return exitOK
}

const workflowListUsage = `
Usage: tasker workflow list [-namespace N] [-stale|-consistent] [-addr URL] [-o table|json]

Lists the latest version of every workflow the cluster stores, by
namespace and name: NAMESPACE NAME VERSION ACTIVE STEPS CREATED (when
that version was applied, UTC). ACTIVE is the version tasks started
without one get: the latest, unless an approved proposal pinned another
(marked "(pinned)"; 'tasker ai proposals').
` + consistencyHelp + apiFlagsHelp + apiExit

func workflowListCommand() command {
	return command{name: "workflow list", synopsis: "list the workflows and their latest versions", usage: workflowListUsage, run: runWorkflowList}
}

func runWorkflowList(args []string, stdout, stderr io.Writer) int {
	c := workflowListCommand()
	fs := flags(c, stderr)
	api := addReadFlags(fs)
	namespace := fs.String("namespace", "", "only workflows in namespace `N`; every namespace when empty")
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return usageError(stderr, c, "unexpected argument %q", pos[0])
	}
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.call()
	defer cancel()
	resp, err := cn.workflows.ListWorkflows(ctx, connect.NewRequest(&taskerv1.ListWorkflowsRequest{Namespace: *namespace}))
	if err != nil {
		return cn.fail(err)
	}
	if cn.json() {
		return cn.writeProto(resp.Msg, false)
	}
	if len(resp.Msg.Workflows) == 0 {
		fmt.Fprintln(stderr, "no workflows")
		return exitOK
	}
	tw := table(stdout)
	row(tw, "NAMESPACE", "NAME", "VERSION", "ACTIVE", "STEPS", "CREATED")
	for _, w := range resp.Msg.Workflows {
		row(tw, w.Namespace, w.Name, w.Version, activeVersion(w), fmt.Sprint(len(w.Steps)), timestamp(w.CreatedAt))
	}
	tw.Flush()
	return exitOK
}

const workflowGetUsage = `
Usage: tasker workflow get NAME [-namespace N] [-version V] [-manifest]
                           [-stale|-consistent] [-addr URL] [-o table|json]

Shows one version of a workflow (the active one unless -version says
which: the version tasks started without one get, the latest unless an
approved proposal pinned another): its description, every stored
version, and its steps with their capability, dependencies, timeout and
attempts. NAME may include its
namespace: shop/order-fulfilment. -manifest prints the manifest as it
was applied instead, ready for 'tasker workflow apply -f -'.
` + consistencyHelp + apiFlagsHelp + apiExit

func workflowGetCommand() command {
	return command{name: "workflow get", synopsis: "show a workflow version and its steps", usage: workflowGetUsage, run: runWorkflowGet}
}

func runWorkflowGet(args []string, stdout, stderr io.Writer) int {
	c := workflowGetCommand()
	fs := flags(c, stderr)
	api := addReadFlags(fs)
	namespace := fs.String("namespace", "", "the workflow's namespace `N`; \"default\" when empty")
	version := fs.String("version", "", "version `V` rather than the active one")
	manifest := fs.Bool("manifest", false, "print the stored manifest")
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(stderr, c, "want one workflow name, got %d", len(pos))
	}
	ns, name, err := splitWorkflow(pos[0], *namespace)
	if err != nil {
		return usageError(stderr, c, "%v", err)
	}
	if *manifest && *api.format == formatJSON {
		return usageError(stderr, c, "-manifest prints the manifest as applied; it does not combine with -o json")
	}
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.call()
	defer cancel()
	resp, err := cn.workflows.GetWorkflow(ctx, connect.NewRequest(&taskerv1.GetWorkflowRequest{Namespace: ns, Name: name, Version: *version}))
	if err != nil {
		return cn.fail(err)
	}
	if cn.json() {
		return cn.writeProto(resp.Msg, false)
	}
	w := resp.Msg.GetWorkflow()
	if *manifest {
		fmt.Fprint(stdout, w.Manifest)
		if !strings.HasSuffix(w.Manifest, "\n") {
			fmt.Fprintln(stdout)
		}
		return exitOK
	}
	tw := table(stdout)
	row(tw, "Workflow:", workflowName(w.Namespace, w.Name))
	row(tw, "Version:", w.Version)
	row(tw, "Versions:", strings.Join(w.Versions, ", "))
	row(tw, "Active:", activeVersion(w))
	row(tw, "Created:", timestamp(w.CreatedAt))
	row(tw, "Description:", dash(w.Description))
	tw.Flush()
	fmt.Fprintln(stdout)
	tw = table(stdout)
	row(tw, "STEP", "CAPABILITY", "DEPENDS ON", "TIMEOUT", "MAX ATTEMPTS")
	for _, s := range w.Steps {
		timeout := "-"
		if s.Timeout != nil {
			timeout = duration(s.Timeout.AsDuration())
		}
		row(tw, s.Name, s.Capability, dash(strings.Join(s.DependsOn, ", ")), timeout, fmt.Sprint(s.MaxAttempts))
	}
	tw.Flush()
	return exitOK
}

// activeVersion is the version tasks started without one get, marked
// when a proposal pinned it rather than it being the latest.
func activeVersion(w *taskerv1.Workflow) string {
	v := w.GetActiveVersion()
	if v == "" {
		return "-" // an agent from before active versions
	}
	if w.GetPinned() {
		v += " (pinned)"
	}
	return v
}
