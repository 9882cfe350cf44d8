package main

import (
	"fmt"
	"io"
	"strings"

	"connectrpc.com/connect"

	"github.com/tasker-run/tasker/gossip"
	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

func keyringCommand() command {
	return group("keyring", "list and rotate the gossip encryption keys of every agent", `
Lists and rotates the keys that encrypt gossip between agents, on every
alive agent of the cluster at once: the agent at -addr asks each member
and prints each one's answer. Every agent encrypts with its primary key
and decrypts with any key it holds, so a rotation is, in order:

  tasker keyring install NEW   # every agent can now read NEW
  tasker keyring use NEW       # every agent now writes NEW
  tasker keyring remove OLD    # OLD no longer opens the cluster

Each agent keeps its keys in <data-dir>/keyring.json, which wins over
-encrypt at its next start. Gossip must be encrypted already (-encrypt):
rotation cannot turn encryption on. See docs/operations.md, "Rotating the
gossip key".
`, keyringListCommand(), keyringInstallCommand(), keyringUseCommand(), keyringRemoveCommand())
}

const keyringExit = `
Exit status: 0 when every alive member succeeded, 1 when the agent
refused, could not be reached, or some member failed (each is listed with
its error), 2 on a usage error.
`

const keyringListUsage = `
Usage: tasker keyring list [-addr URL] [-o table|json]

Lists every gossip key the alive members hold: KEY MEMBERS (how many hold
it, of those that answered) PRIMARY (how many encrypt with it). After a
complete rotation there is one key, held by all and primary on all.
Members that did not answer are listed with their errors; members gossip
knows but that are not alive are not asked, and are named.
` + apiFlagsHelp + keyringExit

const keyringInstallUsage = `
Usage: tasker keyring install KEY [-addr URL] [-o table|json]

Adds KEY (base64, as 'tasker keygen' prints it) to every alive member's
keyring, not as primary: they can now decrypt gossip encrypted with it.
Installing a key a member holds already changes nothing there, so run it
again after a failure. Then 'tasker keyring use KEY'.
` + apiFlagsHelp + keyringExit

const keyringUseUsage = `
Usage: tasker keyring use KEY [-addr URL] [-o table|json]

Makes KEY the primary key of every alive member: they encrypt with it from
now on. KEY must be installed on every alive member first; if one lacks it,
or cannot be asked, nothing changes and the members are named. If a member
fails after the check, the others have switched and it has not: gossip
still flows (every member holds both keys); fix it and run this again.
` + apiFlagsHelp + keyringExit

const keyringRemoveUsage = `
Usage: tasker keyring remove KEY [-addr URL] [-o table|json]

Removes KEY from every alive member. The primary key cannot be removed: if
KEY is the primary of any member (or a member cannot be asked), nothing
changes and the members are named; make another key primary first with
'tasker keyring use OTHER-KEY'. An agent holding only KEY can no longer
join.
` + apiFlagsHelp + keyringExit

func keyringListCommand() command {
	return command{name: "keyring list", synopsis: "list the keys every alive agent holds", usage: keyringListUsage,
		run: func(args []string, stdout, stderr io.Writer) int {
			return runKeyring(keyringListCommand(), taskerv1.KeyringOp_KEYRING_OP_LIST, args, stdout, stderr)
		}}
}

func keyringInstallCommand() command {
	return command{name: "keyring install", synopsis: "add a key to every alive agent", usage: keyringInstallUsage,
		run: func(args []string, stdout, stderr io.Writer) int {
			return runKeyring(keyringInstallCommand(), taskerv1.KeyringOp_KEYRING_OP_INSTALL, args, stdout, stderr)
		}}
}

func keyringUseCommand() command {
	return command{name: "keyring use", synopsis: "make an installed key primary on every alive agent", usage: keyringUseUsage,
		run: func(args []string, stdout, stderr io.Writer) int {
			return runKeyring(keyringUseCommand(), taskerv1.KeyringOp_KEYRING_OP_USE, args, stdout, stderr)
		}}
}

func keyringRemoveCommand() command {
	return command{name: "keyring remove", synopsis: "remove a key that is not primary from every alive agent", usage: keyringRemoveUsage,
		run: func(args []string, stdout, stderr io.Writer) int {
			return runKeyring(keyringRemoveCommand(), taskerv1.KeyringOp_KEYRING_OP_REMOVE, args, stdout, stderr)
		}}
}

// keyringDoing is the heading of each operation, as Consul prints it.
var keyringDoing = map[taskerv1.KeyringOp]string{
	taskerv1.KeyringOp_KEYRING_OP_LIST:    "Gathering installed encryption keys",
	taskerv1.KeyringOp_KEYRING_OP_INSTALL: "Installing new gossip encryption key",
	taskerv1.KeyringOp_KEYRING_OP_USE:     "Changing primary gossip encryption key",
	taskerv1.KeyringOp_KEYRING_OP_REMOVE:  "Removing gossip encryption key",
}

func runKeyring(c command, op taskerv1.KeyringOp, args []string, stdout, stderr io.Writer) int {
	fs := flags(c, stderr)
	api := addAPIFlags(fs)
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	var key string
	if op == taskerv1.KeyringOp_KEYRING_OP_LIST {
		if len(pos) > 0 {
			return usageError(stderr, c, "unexpected argument %q", pos[0])
		}
	} else {
		if len(pos) != 1 {
			return usageError(stderr, c, "want one KEY (base64, as 'tasker keygen' prints it), got %d arguments", len(pos))
		}
		key = pos[0]
		if _, err := gossip.DecodeKey(key); err != nil {
			return usageError(stderr, c, "KEY: %v; generate one with 'tasker keygen'", strings.TrimPrefix(err.Error(), "gossip: "))
		}
	}
	cn, code, ok := api.connect(c, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := cn.call()
	defer cancel()
	resp, err := cn.cluster.Keyring(ctx, connect.NewRequest(&taskerv1.KeyringRequest{Op: op, Key: key}))
	if err != nil {
		return cn.fail(err)
	}
	r := resp.Msg
	if cn.json() {
		if code := cn.writeProto(r, false); code != exitOK {
			return code
		}
		if r.Failed > 0 {
			return exitFail
		}
		return exitOK
	}
	fmt.Fprintf(stdout, "==> %s (asked by %s, %s)...\n", keyringDoing[op], r.Agent, plural(int(r.Total), "alive member"))
	if op == taskerv1.KeyringOp_KEYRING_OP_LIST {
		writeKeyList(stdout, r)
	} else {
		tw := table(stdout)
		row(tw, "NODE", "RESULT")
		for _, n := range r.Nodes {
			result := "ok"
			if !n.Ok {
				result = "error: " + n.Error
			}
			row(tw, n.Node, result)
		}
		tw.Flush()
	}
	done := r.Total - r.Failed
	switch {
	case r.Failed == 0 && op != taskerv1.KeyringOp_KEYRING_OP_LIST:
		fmt.Fprintf(stdout, "==> Done: %d of %d members\n", done, r.Total)
	case r.Failed > 0:
		var failed []string
		for _, n := range r.Nodes {
			if !n.Ok {
				failed = append(failed, n.Node)
			}
		}
		fmt.Fprintf(stderr, "tasker %s: %d of %d members failed (%s); %s\n", c.name, r.Failed, r.Total, strings.Join(failed, ", "), keyringLeftState(op))
	}
	if len(r.NotAsked) > 0 {
		fmt.Fprintf(stderr, "tasker %s: not asked, not alive: %s; %s\n", c.name, strings.Join(r.NotAsked, ", "), keyringNotAsked(op))
	}
	if r.Failed > 0 {
		return exitFail
	}
	return exitOK
}

// writeKeyList prints the keys of a listing, and each member that failed.
func writeKeyList(w io.Writer, r *taskerv1.KeyringResponse) {
	answered := r.Total - r.Failed
	tw := table(w)
	row(tw, "KEY", "MEMBERS", "PRIMARY")
	for _, k := range r.Keys {
		row(tw, k.Key, fmt.Sprintf("%d/%d", k.Members, answered), fmt.Sprintf("%d/%d", k.Primary, answered))
	}
	tw.Flush()
	if r.Failed == 0 {
		return
	}
	tw = table(w)
	row(tw, "NODE", "ERROR")
	for _, n := range r.Nodes {
		if !n.Ok {
			row(tw, n.Node, n.Error)
		}
	}
	tw.Flush()
}

// keyringLeftState says what state a partly failed operation leaves the
// cluster in, and what to do.
func keyringLeftState(op taskerv1.KeyringOp) string {
	switch op {
	case taskerv1.KeyringOp_KEYRING_OP_INSTALL:
		return "the others hold the key now and the failed ones do not; gossip is unaffected (no one encrypts with it yet). Do not 'use' it: fix the errors and run install again (members that hold the key are unchanged)"
	case taskerv1.KeyringOp_KEYRING_OP_USE:
		return "the others encrypt with the key now, the failed ones still with their old primary; gossip still flows, since every member holds both. Do not remove the old key: fix the errors and run use again"
	case taskerv1.KeyringOp_KEYRING_OP_REMOVE:
		return "the failed ones still hold the key, which is harmless but lets an agent holding only it reach them; fix the errors and run remove again"
	}
	return "their keys are unknown; run it again"
}

// keyringNotAsked says what a member that was not alive misses.
func keyringNotAsked(op taskerv1.KeyringOp) string {
	switch op {
	case taskerv1.KeyringOp_KEYRING_OP_LIST:
		return "their keys are not counted"
	case taskerv1.KeyringOp_KEYRING_OP_REMOVE:
		return "they keep the key until they come back and the command is run again"
	}
	return "they keep their old keyring: run the command again once they are back, before removing the old key, or they cannot rejoin"
}
