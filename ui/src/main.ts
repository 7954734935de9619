import { mount } from "svelte";
import App from "./App.svelte";
import "./app.css";
import { httpTransport } from "./lib/api/http";
import { followShell, inDesktop, tauriTransport } from "./lib/api/tauri";
import { AppState, deviceHref } from "./lib/stores/app.svelte";

// In the desktop window: Tauri's IPC and events; in a browser: HTTP and SSE.
// (`window.__VIGIL_TRANSPORT__` lets a test supply its own.)
const transport = (window as any).__VIGIL_TRANSPORT__ ?? (inDesktop() ? tauriTransport() : httpTransport());
const state = new AppState(transport);
state.start();
if (inDesktop()) followShell((place) => (location.hash = place === "alerts" ? "#/alerts" : deviceHref(place.device)));
mount(App, { target: document.getElementById("app")!, props: { app: state } });
