import { useEffect, useMemo, useState } from "react";
import { ReactFlowProvider } from "@xyflow/react";
import { makeClients, type Clients } from "./api";
import { emptyManifest, importYaml } from "./manifest";
import { canvasFromManifest, type Canvas } from "./graph";
import { BuildScreen } from "./components/BuildScreen";
import { AskScreen } from "./components/AskScreen";
import { WatchScreen } from "./components/WatchScreen";
import { ClusterScreen } from "./components/ClusterScreen";
import { Settings } from "./components/Settings";

const tabs = ["build", "ask", "watch", "cluster", "settings"] as const;
type Tab = (typeof tabs)[number];

// The screen and the open task live in the URL's hash, so that a link to a
// task works and the agent needs no route but /ui/.
function readHash(): { tab: Tab; task: string } {
  const [tab, task] = window.location.hash.replace(/^#\/?/, "").split("/");
  return { tab: (tabs as readonly string[]).includes(tab ?? "") ? (tab as Tab) : "build", task: task ? decodeURIComponent(task) : "" };
}

export function App({ clients: given }: { clients?: Clients }) {
  const clients = useMemo(() => given ?? makeClients(), [given]);
  const [route, setRoute] = useState(readHash);
  const [canvas, setCanvasState] = useState<Canvas>(() => canvasFromManifest(emptyManifest()));
  // What the agent can do (InsightService.Status); unknown until it
  // answers, and left unknown by an agent that cannot say.
  const [status, setStatus] = useState<{ modelConfigured: boolean; approvalRequired: boolean } | undefined>();
  useEffect(() => {
    let live = true;
    Promise.resolve()
      .then(() => clients.insight.status({}))
      .then((r) => live && setStatus({ modelConfigured: r.modelConfigured, approvalRequired: r.approvalRequired }))
      .catch(() => {});
    return () => {
      live = false;
    };
  }, [clients]);
  // Without a model there is nothing to ask.
  const shown = tabs.filter((t) => t !== "ask" || status?.modelConfigured !== false);
  useEffect(() => {
    const on = () => setRoute(readHash());
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  const go = (tab: Tab, task = "") => {
    window.location.hash = `/${tab}${task ? `/${encodeURIComponent(task)}` : ""}`;
  };
  const setCanvas = (update: (c: Canvas) => Canvas) => setCanvasState(update);

  return (
    <div className="app">
      <header>
        <h1>Tasker</h1>
        <nav aria-label="Screens">
          {shown.map((t) => (
            <button key={t} type="button" aria-current={route.tab === t ? "page" : undefined} onClick={() => go(t)}>
              {t[0]!.toUpperCase() + t.slice(1)}
            </button>
          ))}
        </nav>
      </header>
      <main>
        {route.tab === "build" && (
          <ReactFlowProvider>
            <BuildScreen
              clients={clients}
              canvas={canvas}
              setCanvas={setCanvas}
              modelConfigured={status?.modelConfigured ?? false}
              approvalRequired={status?.approvalRequired ?? false}
            />
          </ReactFlowProvider>
        )}
        {route.tab === "ask" && (
          <AskScreen
            clients={clients}
            modelConfigured={status?.modelConfigured}
            onDraft={(text) => {
              setCanvasState(canvasFromManifest(importYaml(text)));
              go("build");
            }}
          />
        )}
        {route.tab === "watch" && <WatchScreen clients={clients} taskId={route.task} onOpen={(id) => go("watch", id)} />}
        {route.tab === "cluster" && <ClusterScreen clients={clients} />}
        {route.tab === "settings" && <Settings />}
      </main>
    </div>
  );
}
