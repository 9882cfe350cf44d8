import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { WorkflowService } from "@gen/tasker/v1/workflow_pb.js";
import { ClusterService } from "@gen/tasker/v1/cluster_pb.js";
import { InsightService } from "@gen/tasker/v1/insight_pb.js";
import { ProposalService } from "@gen/tasker/v1/proposal_pb.js";

const tokenKey = "tasker.token";

// The token lives in localStorage so that a reload keeps it; the agent's
// ACLs decide what it may do, the UI only forwards it.
export function getToken(): string {
  try {
    return localStorage.getItem(tokenKey) ?? "";
  } catch {
    return "";
  }
}

export function setToken(token: string): void {
  try {
    if (token) localStorage.setItem(tokenKey, token);
    else localStorage.removeItem(tokenKey);
  } catch {
    // Storage can be disabled; the token then lasts only this page.
  }
  memoryToken = token;
}

let memoryToken = getToken();

const auth: Interceptor = (next) => async (req) => {
  if (memoryToken) req.header.set("Authorization", `Bearer ${memoryToken}`);
  return next(req);
};

export interface Clients {
  workflow: Client<typeof WorkflowService>;
  cluster: Client<typeof ClusterService>;
  insight: Client<typeof InsightService>;
  proposal: Client<typeof ProposalService>;
}

// JSON, not binary: the agent's local port speaks both, and JSON is what
// one can read in the browser's network tab.
export function makeClients(baseUrl: string = window.location.origin): Clients {
  const transport = createConnectTransport({ baseUrl, useBinaryFormat: false, interceptors: [auth] });
  return {
    workflow: createClient(WorkflowService, transport),
    cluster: createClient(ClusterService, transport),
    insight: createClient(InsightService, transport),
    proposal: createClient(ProposalService, transport),
  };
}
