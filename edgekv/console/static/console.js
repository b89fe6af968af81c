// The console's entry: log in, then route between views on the URL's hash.

import { api, paths, session, whenUnauthorized } from "./api.js";
import { chartsView, clusterView, documentsView, feedView, keysView } from "./views.js";

const VIEWS = { cluster: clusterView, charts: chartsView, keys: keysView,
  documents: documentsView, feed: feedView };

const login = document.getElementById("login");
const nav = document.getElementById("nav");
const view = document.getElementById("view");
let current = new AbortController();

function showLogin(message = "") {
  current.abort();
  nav.hidden = true;
  view.replaceChildren();
  login.hidden = false;
  document.getElementById("login-error").textContent = message;
  document.getElementById("token").focus();
}

async function route() {
  if (!session.loggedIn) { showLogin(); return; }
  current.abort();
  current = new AbortController();
  login.hidden = true;
  nav.hidden = false;
  const [name, search] = (location.hash.slice(1) || "cluster").split("?");
  const show = VIEWS[name] ?? clusterView;
  for (const link of nav.querySelectorAll("a")) {
    link.classList.toggle("active", link.dataset.view === name);
  }
  view.dataset.view = name;
  await show(view, current.signal, new URLSearchParams(search ?? ""));
}

login.addEventListener("submit", async (event) => {
  event.preventDefault();
  session.token = document.getElementById("token").value.trim();
  try {
    await api(paths.status); // checks the token, and that it has the admin scope
    document.getElementById("token").value = "";
    await route();
  } catch (error) {
    session.token = null;
    showLogin(error.status === 401 ? "That token is not valid here." : error.message);
  }
});

document.getElementById("logout").addEventListener("click", () => {
  session.token = null;
  showLogin();
});

whenUnauthorized(() => {
  session.token = null;
  showLogin("The token was refused; log in again.");
});

window.addEventListener("hashchange", route);
route();
