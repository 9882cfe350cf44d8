package main

import (
	"fmt"
	"io"
	"strings"

	"connectrpc.com/connect"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

const aiGenerateUsage = `
Usage: tasker ai generate "DESCRIPTION" [-namespace N] [-name W] [-dry-run] [-addr URL] [-o table|json|yaml]

Drafts a workflow manifest from a plain-language description (at most
4000 characters) with the language model the agents are configured with
(ai_endpoint and ai_model, docs/ai.md), from the capabilities the cluster
offers now: their names, descriptions and input and output schemas. The
draft is checked as 'tasker validate' checks a manifest (structure, the
DAG, durations, every input mapping against the result schema it reads)
and, step by step, against the schemas its capability's apps advertise;
an invented capability is named with the closest real ones. Problems go
back to the model, which corrects the whole manifest, up to 3 times.

It prints the manifest (YAML), the shape of the DAG, the model's account
of it, the capabilities the description needs that no agent offers, and
what is still wrong. A valid draft is filed as a proposal, which changes
nothing until an operator approves it with 'tasker ai proposals approve
ID': the first version of a new workflow (create_workflow), or, when the
workflow exists, its next version (update_workflow, 1.2.0 -> 1.2.1-ai.1).
-dry-run files nothing. -name sets the workflow's name (the model picks
one otherwise), -namespace its namespace ("default" when empty).

-o yaml prints only the manifest, and the problems on stderr; -o json the
agent's response.

Exit status: 0 for a valid draft, 1 when the draft is not valid (it needs
a capability nobody offers, or problems remain), when no language model is
configured, or when the agent refused or could not be reached; 2 on a
usage error.
`

func aiGenerateCommand() command {
	return command{name: "ai generate", synopsis: "draft a workflow from a description with the language model", usage: aiGenerateUsage, run: runAIGenerate}
}

// formatYAML is ai generate's -o for the manifest alone.
const formatYAML outputFormat = "yaml"

// generateFormat is the value of ai generate's -o.
type generateFormat struct{ f *outputFormat }

func (v *generateFormat) String() string {
	if v == nil || v.f == nil {
		return string(formatTable)
	}
	return string(*v.f)
}

func (v *generateFormat) Set(s string) error {
	switch outputFormat(s) {
	case formatTable, formatJSON, formatYAML:
		*v.f = outputFormat(s)
		return nil
	}
	return fmt.Errorf("want table, json or yaml")
}

func runAIGenerate(args []string, stdout, stderr io.Writer) int {
	c := aiGenerateCommand()
	fs := flags(c, stderr)
	format := formatTable
	api := apiFlags{
		addr:   fs.String("addr", "", "agent `URL`; default $"+addrEnv+", else "+defaultAddr),
		token:  fs.String("token", "", "ACL `token` (a writer's) when the agent has ACLs on; default $"+tokenEnv),
		format: &format,
	}
	fs.Var(&generateFormat{&format}, "o", "output `format`: table for people, json for scripts, yaml for the manifest alone")
	namespace := fs.String("namespace", "", "the workflow's namespace `N`; \"default\" when empty")
	name := fs.String("name", "", "the workflow's name `W`; the model picks one when empty")
	dryRun := fs.Bool("dry-run", false, "draft only: file no proposal")
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(stderr, c, "want one description (quote it), got %d arguments", len(pos))
	}
	desc := strings.TrimSpace(pos[0])
	if desc == "" {
		return usageError(stderr, c, "the description is empty: say in plain language what the workflow should do")
	}
	if n := len([]rune(desc)); n > 4000 {
		return usageError(stderr, c, "the description is %d characters, over the limit of 4000: shorten it", n)
	}
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	// The model may take minutes over its repair rounds; the agent bounds
	// them (ai_timeout per answer), not the call timeout.
	ctx, cancel := cn.context()
	defer cancel()
	resp, err := cn.insight.GenerateWorkflow(ctx, connect.NewRequest(&taskerv1.GenerateWorkflowRequest{
		Description: desc, Namespace: *namespace, Name: *name, DryRun: *dryRun,
	}))
	if err != nil {
		return cn.fail(err)
	}
	g := resp.Msg
	exit := exitOK
	if !g.GetValid() {
		exit = exitFail
	}
	switch format {
	case formatJSON:
		if code := cn.writeProto(g, false); code != exitOK {
			return code
		}
		return exit
	case formatYAML:
		fmt.Fprint(stdout, g.GetManifest())
		for _, p := range g.GetProblems() {
			fmt.Fprintf(stderr, "tasker ai generate: %s\n", p)
		}
		return exit
	}
	writeDraft(stdout, g, *dryRun)
	return exit
}

// writeDraft prints a draft for people: the manifest, its shape, the
// model's account, what is missing or wrong, and what happens next.
func writeDraft(w io.Writer, g *taskerv1.GenerateWorkflowResponse, dryRun bool) {
	state := "valid"
	if !g.GetValid() {
		state = "not valid"
	}
	fmt.Fprintf(w, "Draft (%s, %s from the model):\n\n", state, plural(int(g.GetRounds()), "answer"))
	fmt.Fprint(w, g.GetManifest())
	if !strings.HasSuffix(g.GetManifest(), "\n") {
		fmt.Fprintln(w)
	}
	if g.GetSummary() != "" {
		fmt.Fprintf(w, "\nShape: %s\n", g.GetSummary())
	}
	if g.GetExplanation() != "" {
		fmt.Fprintf(w, "\nExplanation (language model):\n%s\n", g.GetExplanation())
	}
	if len(g.GetMissingCapabilities()) > 0 {
		fmt.Fprintln(w, "\nMissing capabilities (no agent offers them):")
		for _, m := range g.GetMissingCapabilities() {
			fmt.Fprintf(w, "  %s\n", m)
		}
	}
	if len(g.GetProblems()) > 0 {
		fmt.Fprintf(w, "\nProblems (%d):\n", len(g.GetProblems()))
		for _, p := range g.GetProblems() {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
	switch {
	case !g.GetValid():
		fmt.Fprintln(w, "\nNot filed: the draft is not valid. Describe the workflow again, or fix the manifest and check it with 'tasker validate'.")
	case g.GetProposalId() != "":
		id := g.GetProposalId()
		fmt.Fprintf(w, "\nFiled as proposal %s. Review it with 'tasker ai proposals show %s'; approve it with 'tasker ai proposals approve %s'.\n", id, id, id)
	case dryRun:
		fmt.Fprintln(w, "\nDry run: no proposal filed. Run again without -dry-run to file it, or save the manifest and 'tasker workflow apply' it.")
	}
}
