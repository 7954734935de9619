import { mount } from "svelte";
import App from "./App.svelte";
import "./app.css";
import { httpTransport } from "./lib/api/http";
import { inDesktop, tauriTransport } from "./lib/api/tauri";
import { AppState } from "./lib/stores/app.svelte";

// In the desktop window: Tauri's IPC and events; in a browser: HTTP and SSE.
// (`window.__VIGIL_TRANSPORT__` lets a test supply its own.)
const transport = (window as any).__VIGIL_TRANSPORT__ ?? (inDesktop() ? tauriTransport() : httpTransport());
const state = new AppState(transport);
state.start();
mount(App, { target: document.getElementById("app")!, props: { app: state } });
