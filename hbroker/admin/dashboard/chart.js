// A line chart on a <canvas>, drawn by hand (no chart library: the dashboard works offline).
// series: [{label, color, points: [[unixSeconds, value], ...]}], over the last `span` seconds.

export function drawChart(canvas, series, span, now) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  if (!width || !height) return;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  const left = 56, right = 10, top = 8, bottom = 24;
  const plotW = width - left - right, plotH = height - top - bottom;
  const start = now - span;
  let max = 0;
  for (const s of series) for (const [, v] of s.points) max = Math.max(max, v);
  const scale = niceMax(max);

  g.font = "11px system-ui, sans-serif";
  g.strokeStyle = "#dde3ea";
  g.fillStyle = "#5f6b78";
  g.lineWidth = 1;
  g.textAlign = "right";
  g.textBaseline = "middle";
  for (let i = 0; i <= 4; i++) {
    const y = top + plotH - (plotH * i) / 4;
    g.beginPath(); g.moveTo(left, y + 0.5); g.lineTo(left + plotW, y + 0.5); g.stroke();
    g.fillText(formatRate((scale * i) / 4), left - 6, y);
  }
  g.textAlign = "center";
  g.textBaseline = "top";
  for (let m = 0; m <= span / 60; m += 5) {  // a label every 5 minutes: -15m ... now
    const x = left + plotW - (plotW * m * 60) / span;
    g.fillText(m === 0 ? "now" : `-${m}m`, x, top + plotH + 6);
  }
  g.save();
  g.beginPath(); g.rect(left, top, plotW, plotH); g.clip();
  const baseline = top + plotH;
  for (const s of series) {
    const xy = s.points.filter(([t]) => t >= start).map(([t, v]) => [
      left + ((t - start) / span) * plotW, baseline - (v / scale) * plotH]);
    if (!xy.length) continue;
    g.beginPath();  // the area under the line, faint, then the line
    g.moveTo(xy[0][0], baseline);
    for (const [x, y] of xy) g.lineTo(x, y);
    g.lineTo(xy[xy.length - 1][0], baseline);
    g.closePath();
    g.globalAlpha = 0.12;
    g.fillStyle = s.color;
    g.fill();
    g.globalAlpha = 1;
    g.strokeStyle = s.color;
    g.lineWidth = 2;
    g.beginPath();
    xy.forEach(([x, y], i) => (i ? g.lineTo(x, y) : g.moveTo(x, y)));
    g.stroke();
    const [lastX, lastY] = xy[xy.length - 1];  // the latest value, a dot
    g.beginPath();
    g.arc(lastX, lastY, 3, 0, 2 * Math.PI);
    g.fill();
  }
  g.restore();
}

function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

export function formatRate(value) {
  if (value >= 1e6) return (value / 1e6).toFixed(1) + "M";
  if (value >= 1e4) return (value / 1e3).toFixed(0) + "k";
  if (value >= 1e3) return (value / 1e3).toFixed(1) + "k";
  if (value >= 10 || value === 0) return value.toFixed(0);
  return value.toFixed(1);
}
