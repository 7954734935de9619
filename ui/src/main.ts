import { mount } from "svelte";
import App from "./App.svelte";
import "./app.css";
import { httpTransport } from "./lib/api/http";
import { AppState } from "./lib/stores/app.svelte";

// In the desktop window the shell supplies its own transport (Tauri invoke and
// events) as `window.__VIGIL_TRANSPORT__`; in a browser it is HTTP and SSE.
const transport = (window as any).__VIGIL_TRANSPORT__ ?? httpTransport();
const state = new AppState(transport);
state.start();
mount(App, { target: document.getElementById("app")!, props: { app: state } });
