package main

import (
	"fmt"
	"io"
	"slices"
)

const helpUsage = `
Usage: tasker help [COMMAND [SUBCOMMAND...]]

Lists the commands, or prints one command's help: its arguments, flags
and exit codes. For a command with subcommands (workflow, task, step,
snapshot, raft, tls, inject) it lists them; 'tasker help task get'
prints one's help.
`

func helpCommand() command {
	return command{name: "help", synopsis: "list the commands, or show one command's help", usage: helpUsage, run: runHelp}
}

func runHelp(args []string, stdout, stderr io.Writer) int {
	switch len(args) {
	case 0:
		writeOverview(stdout)
		return exitOK
	case 1, 2, 3: // a command, a subcommand, and a sub-subcommand (tls ca create)
		if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
			fmt.Fprint(stdout, helpUsage[1:])
			return exitOK
		}
		c, ok := lookup(args[0])
		if !ok {
			fmt.Fprintf(stderr, "tasker help: unknown command %q; run 'tasker help' for the list\n", args[0])
			return exitUsage
		}
		// Each name must be a subcommand of the one before (tls ca create).
		cur := c
		for _, name := range args[1:] {
			if cur.subcommands == nil {
				return usageError(stderr, helpCommand(), "%s has no subcommands", cur.name)
			}
			i := slices.IndexFunc(cur.subcommands, func(s command) bool { return s.name == cur.name+" "+name })
			if i < 0 {
				break // the group itself says the subcommand is unknown
			}
			cur = cur.subcommands[i]
		}
		// Each command describes its own flags; asking it for -h prints
		// its usage the same way 'tasker COMMAND [SUBCOMMAND] -h' does.
		return c.run(append(args[1:len(args):len(args)], "-h"), stdout, stderr)
	}
	c, _ := lookup("help")
	return usageError(stderr, c, "expected at most a command and two subcommands, got %d names", len(args))
}
