package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/tasker-run/tasker/refdoc"
	"github.com/tasker-run/tasker/workflow"
)

const docsUsage = `
Usage: tasker docs FILE [-out FILE]

Writes the Markdown reference of a workflow, generated from its manifest:
a Mermaid graph of the DAG, the input contract, and for every step its
capability, owner, dependencies, timeout, retry policy, input mapping,
and result and error contracts, each contract as a table of fields with
their types, whether they are required, and their constraints.

The output is the same for the same manifest, so it can be committed and
kept up to date in CI. An invalid manifest is reported as by
'tasker validate' and nothing is written.

Exit status: 0 when the reference was written, 1 when the manifest is
invalid or a file cannot be read or written, 2 on a usage error.
`

func docsCommand() command {
	return command{name: "docs", synopsis: "write the Markdown reference of a workflow's contracts", usage: docsUsage, run: runDocs}
}

func runDocs(args []string, stdout, stderr io.Writer) int {
	c := docsCommand()
	fs := flags(c, stderr)
	out := fs.String("out", "", "write to `FILE` instead of standard output")
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(stderr, c, "want one manifest, got %d", len(pos))
	}
	file := pos[0]
	src, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", file, readError(err))
		return exitFail
	}
	plan, err := workflow.Load(src, workflow.Limits{})
	if err != nil {
		var ve *workflow.ValidationError
		if errors.As(err, &ve) {
			for _, p := range ve.Problems {
				fmt.Fprintf(stderr, "%s: %s\n", file, p)
			}
			return exitFail
		}
		fmt.Fprintf(stderr, "%s: %v\n", file, err)
		return exitFail
	}
	var buf bytes.Buffer
	if err := refdoc.Write(&buf, plan); err != nil {
		fmt.Fprintf(stderr, "tasker docs: %v\n", err)
		return exitFail
	}
	if *out == "" {
		if _, err := stdout.Write(buf.Bytes()); err != nil {
			fmt.Fprintf(stderr, "tasker docs: %v\n", err)
			return exitFail
		}
		return exitOK
	}
	if err := os.WriteFile(*out, buf.Bytes(), 0o644); err != nil {
		fmt.Fprintf(stderr, "tasker docs: %v\n", err)
		return exitFail
	}
	fmt.Fprintf(stdout, "wrote %s (%d bytes)\n", *out, buf.Len())
	return exitOK
}
