// Command tasker is Tasker's one binary: it runs the agent, checks
// workflow manifests, writes their reference documentation, runs a
// simulated demo, and is the operator's client of a running agent
// (workflows, tasks, steps, snapshots, membership, Raft, capabilities,
// circuit breakers).
//
// Each subcommand lives in its own file with its help text. This package
// only parses flags and prints: the work is done by packages workflow,
// refdoc and sim, and by the agent behind its public API (client.go),
// which any other client can call the same way.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Exit codes.
const (
	exitOK    = 0 // done, and everything checked was valid
	exitFail  = 1 // done, and something was invalid or failed
	exitUsage = 2 // the command line was wrong
)

// command is one subcommand. A command with subcommands (`tasker task
// get`) is made by group; its subcommands' names are their whole path
// after "tasker" ("task get"), so that their messages name them fully.
type command struct {
	name     string
	synopsis string // one line, for `tasker help`
	usage    string // the full help text
	run      func(args []string, stdout, stderr io.Writer) int
	// subcommands are a group's commands; nil for a plain command.
	subcommands []command
}

// commands lists the subcommands in the order `tasker help` shows them.
// A new command is one file with a constructor, and one line here.
func commands() []command {
	return []command{
		agentCommand(),
		validateCommand(),
		docsCommand(),
		demoCommand(),
		workflowCommand(),
		taskCommand(),
		stepCommand(),
		dlqCommand(),
		eventsCommand(),
		snapshotCommand(),
		membersCommand(),
		capabilitiesCommand(),
		breakersCommand(),
		raftCommand(),
		leaveCommand(),
		healthCommand(),
		aiCommand(),
		mcpCommand(),
		forceLeaveCommand(),
		keygenCommand(),
		keyringCommand(),
		aclCommand(),
		tlsCommand(),
		injectCommand(),
		versionCommand(),
		helpCommand(),
	}
}

func lookup(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// run is the whole program: main only binds it to the process, so that
// tests call it in-process with their own writers.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		writeOverview(stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help":
		name = "help"
	case "-v", "-version", "--version":
		name = "version"
	}
	c, ok := lookup(name)
	if !ok {
		fmt.Fprintf(stderr, "tasker: unknown command %q; run 'tasker help' for the list\n", name)
		return exitUsage
	}
	return c.run(args[1:], stdout, stderr)
}

func writeOverview(w io.Writer) {
	fmt.Fprint(w, "Tasker runs workflows across the systems that take part in them.\n\nUsage: tasker COMMAND [ARGS]\n\nCommands:\n")
	cs := commands()
	width := 0
	for _, c := range cs {
		width = max(width, len(c.name))
	}
	for _, c := range cs {
		fmt.Fprintf(w, "  %-*s  %s\n", width, c.name, c.synopsis)
	}
	fmt.Fprint(w, "\nRun 'tasker help COMMAND' for a command's flags and arguments.\n")
}

// flags makes a subcommand's flag set. Errors go to stderr; help (-h) is
// printed by parse to stdout.
func flags(c command, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	return fs
}

// parse parses args, allowing flags after the positional arguments
// (`tasker docs FILE -out F`), which the flag package alone stops at. It
// returns the positional arguments, or an exit code when the command
// should stop: 0 after printing help, 2 after a usage error.
func parse(c command, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) ([]string, int, bool) {
	var pos []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			writeUsage(stdout, c, fs)
			return nil, exitOK, false
		}
		if err != nil {
			fmt.Fprintf(stderr, "run 'tasker help %s' for usage\n", c.name)
			return nil, exitUsage, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, 0, true
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			// Everything after "--" is positional, even if it looks like a flag.
			return append(pos, rest...), 0, true
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func writeUsage(w io.Writer, c command, fs *flag.FlagSet) {
	fmt.Fprint(w, strings.TrimLeft(c.usage, "\n"))
	if fs == nil {
		return
	}
	var b strings.Builder
	fs.SetOutput(&b)
	fs.PrintDefaults()
	if b.Len() > 0 {
		fmt.Fprintf(w, "\nFlags:\n%s", b.String())
	}
}

// usageError prints a one-line usage error and returns exitUsage.
func usageError(stderr io.Writer, c command, format string, args ...any) int {
	fmt.Fprintf(stderr, "tasker %s: %s; run 'tasker help %s' for usage\n", c.name, fmt.Sprintf(format, args...), c.name)
	return exitUsage
}

// outputFormat is the value of -o.
type outputFormat string

const (
	formatText  outputFormat = "text"
	formatJSON  outputFormat = "json"
	formatTable outputFormat = "table" // the operator commands' name for text
)

func (f *outputFormat) String() string { return string(*f) }

func (f *outputFormat) Set(s string) error {
	switch outputFormat(s) {
	case formatText, formatJSON:
		*f = outputFormat(s)
		return nil
	}
	return fmt.Errorf("want text or json")
}

// formatFlag adds -o to fs.
func formatFlag(fs *flag.FlagSet) *outputFormat {
	f := formatText
	fs.Var(&f, "o", "output `format`: text for people, json for scripts")
	return &f
}

// group makes a command whose first argument picks one of subs, which
// are named by their whole path ("task get"). `tasker GROUP -h` and
// `tasker help GROUP` list the subcommands; `tasker help GROUP SUB`
// prints one's help.
func group(name, synopsis, about string, subs ...command) command {
	var b strings.Builder
	fmt.Fprintf(&b, "\nUsage: tasker %s SUBCOMMAND [ARGS]\n\n%s\nSubcommands:\n", name, strings.TrimLeft(about, "\n"))
	width := 0
	for _, s := range subs {
		width = max(width, len(strings.TrimPrefix(s.name, name+" ")))
	}
	for _, s := range subs {
		fmt.Fprintf(&b, "  %-*s  %s\n", width, strings.TrimPrefix(s.name, name+" "), s.synopsis)
	}
	fmt.Fprintf(&b, "\nRun 'tasker help %s SUBCOMMAND' for a subcommand's flags and arguments.\n", name)
	g := command{name: name, synopsis: synopsis, usage: b.String(), subcommands: subs}
	g.run = func(args []string, stdout, stderr io.Writer) int {
		if len(args) == 0 {
			fmt.Fprint(stderr, strings.TrimLeft(g.usage, "\n"))
			return exitUsage
		}
		switch args[0] {
		case "-h", "-help", "--help":
			writeUsage(stdout, g, nil)
			return exitOK
		}
		for _, s := range subs {
			if s.name == name+" "+args[0] {
				return s.run(args[1:], stdout, stderr)
			}
		}
		fmt.Fprintf(stderr, "tasker %s: unknown subcommand %q; run 'tasker help %s' for the list\n", name, args[0], name)
		return exitUsage
	}
	return g
}
