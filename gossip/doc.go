// Package gossip is an agent's membership in the Tasker cluster: who is
// there, in which role, and which capabilities each agent's app offers. It
// runs hashicorp/memberlist (SWIM: failure detection by probes, state spread
// by gossip) with its LAN defaults, and keeps a Registry that the scheduler
// queries for the agents able to run a step.
//
// # Use
//
//	g, err := gossip.New(gossip.Config{Name: "a1", BindPort: 7422, Role: gossip.RoleClient,
//		RPCAddr: "10.0.0.5:7421", Version: "0.4.0", System: "payments", EncryptKey: key, Logger: log})
//	_, err = g.Join(ctx, []string{"10.0.0.2:7422"})
//	err = g.SetCatalog(caps)                  // again whenever the app's catalog or health changes
//	ps := g.Registry().Providers("payments.charge")
//	events, cancel := g.Registry().Subscribe() // member.joined / failed / left, catalog.updated
//	...
//	g.Leave(5 * time.Second)
//	g.Shutdown()
//
// # What travels where
//
// memberlist gives every node 512 bytes of metadata, gossiped with its
// liveness. Ours is a compact binary record (role, RPC address, agent
// version, catalog version, an 8-byte catalog hash and the capability
// count, at most maxMetaSize bytes for any valid Config): enough for
// Members, and a digest that says which catalog is current, but not the
// catalog itself, which with JSON Schemas easily weighs tens of kilobytes.
//
// A catalog is far larger than a UDP packet (about 1.4 KB), so it never
// goes by UDP. Instead of chunking it into the broadcast queue, which would
// multiply a 50 KB body by the retransmit factor on every node and need
// reassembly and loss handling, the body moves point to point over TCP and
// only its announcement is gossiped:
//
//  1. SetCatalog gives the catalog a new version (the wall clock in
//     microseconds, so it also increases across restarts under the same
//     name), updates the metadata digest, and queues a small notice
//     ("agent A has catalog version V") in a TransmitLimitedQueue.
//  2. A node that learns of a version newer than the one it holds, from the
//     notice or from the metadata, passes the notice on (epidemic spread)
//     and pulls the body from the owner: a msgPull over memberlist's
//     reliable (TCP) channel, answered with the whole catalog the same way.
//     Only the owner is asked, so a node never serves a stale copy, and a
//     catalog is only useful while its owner is alive anyway.
//  3. Push/pull carries each side's own catalog (LocalState and
//     MergeRemoteState), so a joining agent and its seed swap catalogs
//     during the join itself.
//  4. Anti-entropy: every second each node compares every member's
//     announced version with the one it holds and pulls again what is
//     missing; a lost notice or pull costs a delay, never a divergence.
//
// A received catalog replaces the held one only if its version is higher,
// so late or reordered messages cannot roll it back.
//
// The agent's system label (Config.System) travels in the catalog body,
// not the metadata: it is fixed for the agent's lifetime, and in the same
// message as the capabilities every Provider is known together with its
// system, never before it. An agent without a label leaves the field out,
// so its catalog is what agents before labels sent, and theirs decode as
// unlabeled.
//
// # Registry
//
// Providers lists the alive agents whose held catalog offers the
// capability with Healthy set. A member declared dead, or one that left,
// loses its catalog at once (it is pulled afresh if it returns). An app
// that is unhealthy for one capability publishes its catalog with
// Healthy=false for it, and the capability is withdrawn everywhere until it
// is published healthy again. The provider index is rebuilt on each change
// and read without locks, because the scheduler reads it on every dispatch.
//
// memberlist v0.5.4 reports joins, updates and leaves but not suspicion,
// and the nodes its Members returns are shared with its own goroutines, so
// reading their state would race. A suspected member therefore stays alive
// (and keeps its capabilities) until it is confirmed dead, which is the
// intended policy: suspicion is often refuted within a probe interval.
//
// # Security
//
// With Config.EncryptKey set, memberlist encrypts and authenticates every
// packet and stream (AES-GCM, a keyring holding the key); an agent with a
// different key or none cannot join. GenerateKey makes a key. Keys rotate
// without downtime (keyring.go; tasker keyring install, use, remove): every
// member first holds the new key beside the old, then makes it primary,
// then drops the old one. Each agent keeps its keyring in its data dir,
// so a restart comes back with the rotated keys.
package gossip
