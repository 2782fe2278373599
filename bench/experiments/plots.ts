import sharp from 'sharp';

/** A small SVG line chart (no plotting dependency), rendered to PNG by sharp (librsvg). */

export interface Series {
  name: string;
  /** [x, y] points, drawn in order. */
  points: [number, number][];
  dashed?: boolean;
  /** Index into the palette (default: the series' position). */
  colour?: number;
}

export interface ChartSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** Horizontal reference lines (e.g. the centralized arm's final AUC). */
  hlines?: { name: string; y: number }[];
  width?: number;
  height?: number;
}

const COLOURS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** Rounded tick positions covering [lo, hi]. */
function ticks(lo: number, hi: number, count = 5): number[] {
  const span = hi - lo || 1;
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-9; t += step) out.push(Number(t.toPrecision(6)));
  return out;
}

/** The chart as an SVG document. */
export function lineChartSvg(c: ChartSpec): string {
  const W = c.width ?? 860;
  const H = c.height ?? 420;
  const m = { l: 80, r: 300, t: 40, b: 52 };
  const xs = c.series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = [
    ...c.series.flatMap((s) => s.points.map((p) => p[1])),
    ...(c.hlines ?? []).map((h) => h.y),
  ].filter((y) => Number.isFinite(y));
  const x0 = Math.min(...xs);
  const x1 = Math.max(...xs, x0 + 1);
  let y0 = Math.min(...ys);
  let y1 = Math.max(...ys);
  const pad = (y1 - y0) * 0.08 || 0.05;
  y0 -= pad;
  y1 += pad;
  const px = (x: number) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
  const py = (y: number) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="DejaVu Sans, Arial, sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2 - m.r / 2}" y="22" text-anchor="middle" font-size="15">${esc(c.title)}</text>`,
  ];
  for (const t of ticks(y0, y1)) {
    parts.push(
      `<line x1="${m.l}" x2="${W - m.r}" y1="${py(t)}" y2="${py(t)}" stroke="#e5e5e5"/>`,
      `<text x="${m.l - 6}" y="${py(t) + 4}" text-anchor="end">${t}</text>`,
    );
  }
  for (const t of ticks(x0, x1, Math.min(10, Math.max(1, Math.round(x1 - x0))))) {
    parts.push(
      `<line x1="${px(t)}" x2="${px(t)}" y1="${H - m.b}" y2="${H - m.b + 4}" stroke="#333"/>`,
      `<text x="${px(t)}" y="${H - m.b + 18}" text-anchor="middle">${t}</text>`,
    );
  }
  parts.push(
    `<rect x="${m.l}" y="${m.t}" width="${W - m.l - m.r}" height="${H - m.t - m.b}" fill="none" stroke="#333"/>`,
    `<text x="${(m.l + W - m.r) / 2}" y="${H - 12}" text-anchor="middle">${esc(c.xLabel)}</text>`,
    `<text transform="translate(16 ${(m.t + H - m.b) / 2}) rotate(-90)" text-anchor="middle">${esc(c.yLabel)}</text>`,
  );
  let legend = 0;
  const legendRow = (colour: string, name: string, dashed: boolean) => {
    const y = m.t + 8 + legend++ * 18;
    parts.push(
      `<line x1="${W - m.r + 12}" x2="${W - m.r + 36}" y1="${y}" y2="${y}" stroke="${colour}" stroke-width="2"${dashed ? ' stroke-dasharray="5 4"' : ''}/>`,
      `<text x="${W - m.r + 42}" y="${y + 4}">${esc(name)}</text>`,
    );
  };
  c.series.forEach((s, i) => {
    const colour = COLOURS[(s.colour ?? i) % COLOURS.length]!;
    const pts = s.points.filter((p) => Number.isFinite(p[1]));
    if (pts.length === 0) return;
    parts.push(
      `<polyline fill="none" stroke="${colour}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 4"' : ''} points="${pts
        .map((p) => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`)
        .join(' ')}"/>`,
      ...pts.map(
        (p) => `<circle cx="${px(p[0]).toFixed(1)}" cy="${py(p[1]).toFixed(1)}" r="3" fill="${colour}"/>`,
      ),
    );
    legendRow(colour, s.name, s.dashed ?? false);
  });
  (c.hlines ?? []).forEach((h, i) => {
    const colour = ['#555', '#999', '#bbb'][i % 3]!;
    parts.push(
      `<line x1="${m.l}" x2="${W - m.r}" y1="${py(h.y)}" y2="${py(h.y)}" stroke="${colour}" stroke-dasharray="2 3" stroke-width="1.5"/>`,
    );
    legendRow(colour, `${h.name} (${h.y.toFixed(3)})`, true);
  });
  parts.push('</svg>');
  return parts.join('\n');
}

/** Render the chart to a PNG file. */
export async function writeChartPng(c: ChartSpec, file: string): Promise<void> {
  await sharp(Buffer.from(lineChartSvg(c)))
    .png()
    .toFile(file);
}
