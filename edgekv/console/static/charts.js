// Line charts drawn as SVG by the page: a few dozen lines, no library to ship,
// audit or update, and nothing the node must build (see docs/console.md).

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 560;
const HEIGHT = 180;
const PAD = { left: 64, right: 12, top: 12, bottom: 24 };
const COLOURS = ["#2b6cb0", "#c05621", "#2f855a", "#9b2c2c", "#6b46c1", "#b7791f", "#2c7a7b",
  "#97266d"];

function svg(tag, attributes = {}, text) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

export function formatNumber(value, unit = "") {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (unit === "B") {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(value) >= 1024 && i < units.length - 1) { value /= 1024; i += 1; }
    return `${value.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
  }
  const text = Math.abs(value) >= 100 || Number.isInteger(value)
    ? Math.round(value).toString() : value.toFixed(1);
  return unit ? `${text} ${unit}` : text;
}

// series: [{name, values: [number|null]}], times: epoch seconds, one per value.
export function lineChart({ title, times, series, unit = "" }) {
  const figure = document.createElement("figure");
  figure.className = "chart";
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  figure.append(caption);
  const chart = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": title,
  });
  const known = series.flatMap((one) => one.values.filter((v) => v !== null));
  const bottom = Math.min(0, ...known);
  let top = Math.max(0, ...known);
  if (top <= bottom) top = bottom + 1; // a flat series still gets a scale

  const first = times.length ? times[0] : 0;
  const last = times.length ? times[times.length - 1] : 1;
  const span = Math.max(last - first, 1);
  const x = (t) => PAD.left + ((t - first) / span) * (WIDTH - PAD.left - PAD.right);
  const y = (v) => HEIGHT - PAD.bottom - ((v - bottom) / (top - bottom || 1))
    * (HEIGHT - PAD.top - PAD.bottom);
  chart.append(
    svg("line", { x1: PAD.left, y1: y(bottom), x2: WIDTH - PAD.right, y2: y(bottom),
      class: "axis" }),
    svg("line", { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: HEIGHT - PAD.bottom,
      class: "axis" }),
    svg("text", { x: PAD.left - 6, y: y(top) + 4, class: "tick", "text-anchor": "end" },
      formatNumber(top, unit)),
    svg("text", { x: PAD.left - 6, y: y(bottom), class: "tick", "text-anchor": "end" },
      formatNumber(bottom, unit)),
  );
  if (times.length) {
    const minutes = Math.round(span / 60);
    chart.append(
      svg("text", { x: PAD.left, y: HEIGHT - 6, class: "tick" },
        minutes ? `${minutes} min ago` : `${Math.round(span)} s ago`),
      svg("text", { x: WIDTH - PAD.right, y: HEIGHT - 6, class: "tick", "text-anchor": "end" },
        "now"),
    );
  }
  series.forEach((one, index) => {
    // A gap (null) lifts the pen: an unknown value is not drawn as zero.
    let d = "";
    let pen = "M";
    one.values.forEach((value, i) => {
      if (value === null) { pen = "M"; return; }
      d += `${pen}${x(times[i]).toFixed(1)},${y(value).toFixed(1)} `;
      pen = "L";
    });
    const colour = COLOURS[index % COLOURS.length];
    chart.append(svg("path", { d, class: "line", stroke: colour, "data-series": one.name }));
  });
  figure.append(chart);
  if (series.length > 1 || series[0]?.name !== title) {
    const legend = document.createElement("ul");
    legend.className = "legend";
    series.forEach((one, index) => {
      const item = document.createElement("li");
      item.style.setProperty("--colour", COLOURS[index % COLOURS.length]);
      const latest = [...one.values].reverse().find((v) => v !== null);
      item.textContent = `${one.name}: ${formatNumber(latest ?? null, unit)}`;
      legend.append(item);
    });
    figure.append(legend);
  }
  return figure;
}
