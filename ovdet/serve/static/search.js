// ovdet web page, search box: POST /v1/search, then each hit's thumbnail (box drawn by the
// server) from /v1/search/thumb. Shown only when the server has an index (GET /v1/model).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const auth = () => {
    const key = $("api-key") ? $("api-key").value.trim() : "";
    return key ? { Authorization: "Bearer " + key } : {};
  };
  const urls = [];

  async function showIfEnabled() {
    try {
      const response = await fetch("/v1/model", { headers: auth() });
      const body = await response.json();
      $("search").hidden = !(response.ok && body.search);
    } catch (err) { /* no index: the section stays hidden */ }
  }

  async function thumbnail(hit, img) {
    const label = hit.class_name + " " + hit.score.toFixed(2);
    const query = new URLSearchParams({ image_id: hit.image_id, box: hit.box.join(","), label: label });
    const response = await fetch("/v1/search/thumb?" + query, { headers: auth() });
    if (!response.ok) return;
    const url = URL.createObjectURL(await response.blob());
    urls.push(url);
    img.src = url;
  }

  async function search(event) {
    event.preventDefault();
    const query = $("search-query").value.trim();
    if (!query) { $("search-status").textContent = "Type what to look for."; return; }
    $("search-status").textContent = "Searching…";
    urls.splice(0).forEach((u) => URL.revokeObjectURL(u));
    const list = $("search-hits");
    list.replaceChildren();
    const threshold = $("threshold") ? Number($("threshold").value) : null;
    const response = await fetch("/v1/search", {
      method: "POST", headers: { ...auth(), "Content-Type": "application/json" },
      body: JSON.stringify({ query: query, top: 24, threshold: threshold }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) { $("search-status").textContent = body.message || "search failed"; return; }
    $("search-status").textContent = body.hits.length + " hit(s) for " + body.query;
    for (const hit of body.hits) {
      const item = document.createElement("li");
      const img = document.createElement("img");
      img.alt = hit.class_name + " in " + hit.image + ", score " + hit.score.toFixed(3);
      const caption = document.createElement("span");
      caption.textContent = hit.score.toFixed(3) + " " + hit.image.split("/").pop();
      item.append(img, caption);
      list.append(item);
      thumbnail(hit, img);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("search-form").addEventListener("submit", search);
    showIfEnabled();
  });
})();
