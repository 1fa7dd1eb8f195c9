// Live state of the flat: read /api/state, then re-read whenever /api/stream says something moved.
"use strict";
const fmtTime = (wall) => wall ? new Date(wall * 1000).toLocaleTimeString("de-DE") : "–";
const fmtValue = (values) => Object.entries(values).map(([k, v]) =>
  `${k}: ${v === true ? "an" : v === false ? "aus" : Array.isArray(v) ? v.map((x) => x.toFixed(2)).join("/") : v}`).join(", ");

async function refresh() {
  const response = await fetch("/api/state");
  if (!response.ok) return;
  const state = await response.json();
  document.getElementById("clock").textContent = "letztes Ereignis " + fmtTime(state.last_event);
  for (const room of state.rooms) {
    const section = document.querySelector(`.room[data-room="${CSS.escape(room.name)}"]`);
    if (!section) continue;
    section.classList.toggle("occupied", room.occupied);
    const list = section.querySelector(".devices");
    list.replaceChildren(...state.devices.filter((d) => d.room === room.name).map((d) => {
      const li = document.createElement("li");
      li.classList.toggle("offline", d.online === false);
      const name = document.createElement("span"); name.textContent = d.name;
      const value = document.createElement("span"); value.textContent = fmtValue(d.values) || "–";
      li.append(name, value);
      return li;
    }));
  }
  const incidents = document.getElementById("incidents");
  incidents.replaceChildren(...state.incidents.map((i) => {
    const div = document.createElement("div");
    div.className = "incident";
    div.textContent = `${fmtTime(i.wall)} ${i.kind}: ${i.reason}`;
    return div;
  }));
}

let pending = false;
function schedule() {
  if (pending) return;
  pending = true;
  setTimeout(() => { pending = false; refresh(); }, 250);
}
refresh();
new EventSource("/api/stream").onmessage = schedule;
