import { useCallback, useEffect, useState } from "react";
import { ConnectError } from "@connectrpc/connect";
import type { Breaker, CapabilityProviders, Member, RaftPeersResponse } from "@gen/tasker/v1/cluster_pb.js";
import type { Clients } from "../api";
import { when } from "../format";

// ClusterScreen shows who is in the cluster, who leads, what is offered,
// and which breakers are open. Each call fails on its own: a client agent
// has no Raft peers to show but still has members.
export function ClusterScreen({ clients }: { clients: Clients }) {
  const [members, setMembers] = useState<Member[]>([]);
  const [raft, setRaft] = useState<RaftPeersResponse | undefined>();
  const [caps, setCaps] = useState<CapabilityProviders[]>([]);
  const [breakers, setBreakers] = useState<Breaker[]>([]);
  const [errors, setErrors] = useState<string[]>([]);

  const load = useCallback(() => {
    const errs: string[] = [];
    const fail = (what: string) => (e: unknown) => {
      errs.push(`${what}: ${ConnectError.from(e).rawMessage}`);
      setErrors([...errs]);
    };
    setErrors([]);
    clients.cluster.members({}).then((r) => setMembers(r.members), fail("Members"));
    clients.cluster.raftPeers({}).then(setRaft, fail("Raft peers"));
    clients.cluster.capabilities({}).then((r) => setCaps(r.capabilities), fail("Capabilities"));
    clients.cluster.breakers({}).then((r) => setBreakers(r.breakers), fail("Breakers"));
  }, [clients]);
  useEffect(load, [load]);

  return (
    <section className="cluster">
      <div className="row">
        <h2>Cluster</h2>
        <button type="button" onClick={load}>
          Refresh
        </button>
        {raft && (
          <span>
            Leader: <strong>{raft.leader || "none"}</strong> · term {raft.term.toString()} · commit {raft.commitIndex.toString()}
          </span>
        )}
      </div>
      {errors.map((e) => (
        <p key={e} role="alert" className="error">
          {e}
        </p>
      ))}
      <h3>Members</h3>
      <table>
        <thead>
          <tr>
            <th>Name</th>
            <th>Address</th>
            <th>Status</th>
            <th>Role</th>
            <th>Version</th>
            <th>Capabilities</th>
          </tr>
        </thead>
        <tbody>
          {members.map((m) => (
            <tr key={m.name}>
              <td>{m.name}</td>
              <td>{m.address}</td>
              <td>{m.status}</td>
              <td>{m.role}</td>
              <td>{m.version}</td>
              <td>{m.capabilities.join(", ")}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {raft && (
        <>
          <h3>Raft peers</h3>
          <table>
            <thead>
              <tr>
                <th>ID</th>
                <th>Address</th>
                <th>Voter</th>
                <th>Leader</th>
                <th>Last index</th>
              </tr>
            </thead>
            <tbody>
              {raft.peers.map((p) => (
                <tr key={p.id}>
                  <td>{p.id}</td>
                  <td>{p.address}</td>
                  <td>{p.voter ? "yes" : "no"}</td>
                  <td>{p.leader ? "leader" : ""}</td>
                  <td>{p.lastIndex.toString()}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
      <h3>Capabilities</h3>
      <table>
        <thead>
          <tr>
            <th>Capability</th>
            <th>Providers</th>
          </tr>
        </thead>
        <tbody>
          {caps.map((c) => (
            <tr key={c.name}>
              <td>{c.name}</td>
              <td>{c.providers.map((p) => `${p.agent} (${p.version || "?"}, ×${p.maxConcurrency})`).join(", ")}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h3>Breakers</h3>
      {breakers.length === 0 ? (
        <p className="muted">No breakers.</p>
      ) : (
        <table>
          <thead>
            <tr>
              <th>Target</th>
              <th>State</th>
              <th>Requests</th>
              <th>Failures</th>
              <th>In a row</th>
              <th>Since</th>
              <th>Open until</th>
            </tr>
          </thead>
          <tbody>
            {breakers.map((b) => (
              <tr key={b.target}>
                <td>{b.target}</td>
                <td>
                  <span className={`badge breaker-${b.state}`}>{b.state}</span>
                </td>
                <td>{b.requests}</td>
                <td>{b.failures}</td>
                <td>{b.consecutiveFailures}</td>
                <td>{when(b.since)}</td>
                <td>{when(b.openUntil)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
