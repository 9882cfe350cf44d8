package main

import (
	"fmt"
	"io"
)

const helpUsage = `
Usage: tasker help [COMMAND]

Lists the commands, or prints one command's help: its arguments, flags
and exit codes.
`

func helpCommand() command {
	return command{name: "help", synopsis: "list the commands, or show one command's help", usage: helpUsage, run: runHelp}
}

func runHelp(args []string, stdout, stderr io.Writer) int {
	switch len(args) {
	case 0:
		writeOverview(stdout)
		return exitOK
	case 1:
		if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
			fmt.Fprint(stdout, helpUsage[1:])
			return exitOK
		}
		c, ok := lookup(args[0])
		if !ok {
			fmt.Fprintf(stderr, "tasker help: unknown command %q; run 'tasker help' for the list\n", args[0])
			return exitUsage
		}
		// Each command describes its own flags; asking it for -h prints
		// its usage the same way 'tasker COMMAND -h' does.
		return c.run([]string{"-h"}, stdout, stderr)
	}
	c, _ := lookup("help")
	return usageError(stderr, c, "expected at most one command name, got %d", len(args))
}
