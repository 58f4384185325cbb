// convolab explore: the page. It lays out what the server computed and asks it for new configurations;
// it computes no number itself (every value, product, sum and check arrives as text from Python).
// An offline snapshot carries the same data for one configuration, every cell's details included.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("explore-data").textContent);
  const snapshot = data.mode === "snapshot";
  const form = document.getElementById("controls");
  const viewEl = document.getElementById("view");
  const describeEl = document.getElementById("describe");
  const names = Object.keys(data.defaults);
  const flags = ["flip", "transposed"];
  const state = {
    payload: null, query: "", tab: "forward", details: new Map(), seq: 0, timer: null,
    selected: null, playTimer: null, order: [], hoverSeq: 0,
  };

  // -- controls ---------------------------------------------------------------------------------

  function readControls() {
    const values = {};
    for (const name of names) {
      const element = form.elements[name];
      if (flags.includes(name)) values[name] = element.checked ? "1" : "0";
      else values[name] = element.value;
    }
    // A disabled control does not apply: a transposed convolution has no flip or padding mode, and
    // output_padding belongs to it alone.
    if (values.transposed === "1") Object.assign(values, { flip: "0", padding_mode: "zeros" });
    else values.output_padding = "0";
    return values;
  }

  function fillControls(texts) {
    for (const name of names) {
      if (!(name in texts)) continue;
      const element = form.elements[name];
      if (flags.includes(name)) element.checked = ["1", "true", "on", "yes"].includes(String(texts[name]).toLowerCase());
      else element.value = texts[name];
    }
    syncEnabled();
  }

  function syncEnabled() {
    const fromSize = form.elements.input_from.value === "size";
    form.elements.channels.disabled = snapshot || !fromSize;
    const transposed = form.elements.transposed.checked;
    form.elements.output_padding.disabled = snapshot || !transposed;
    form.elements.flip.disabled = snapshot || transposed;
    form.elements.padding_mode.disabled = snapshot || transposed;
  }

  function query(values) {
    const params = new URLSearchParams();
    for (const name of names) params.set(name, values[name]);
    return params.toString();
  }

  function clearErrors() {
    for (const slot of form.querySelectorAll("[data-error-for]")) slot.textContent = "";
    for (const element of form.querySelectorAll("[aria-invalid]")) element.removeAttribute("aria-invalid");
  }

  function showError(control, message) {
    clearErrors();
    const slot = form.querySelector(`[data-error-for="${control || ""}"]`) || form.querySelector('[data-error-for=""]');
    slot.textContent = message;
    viewEl.classList.add("stale");  // what is drawn is the last configuration that worked
    const element = control && form.elements[control];
    if (element && element.setAttribute) element.setAttribute("aria-invalid", "true");
  }

  function schedule() {
    clearTimeout(state.timer);
    state.timer = setTimeout(refresh, 120);
  }

  async function refresh() {
    const values = readControls();
    const seq = ++state.seq;
    let response, answer;
    try {
      response = await fetch("api/view?" + query(values));
      answer = await response.json();
    } catch (error) {
      if (seq === state.seq) showError(null, "explore: the server did not answer (" + error.message + "); is convolab explore still running?");
      return;
    }
    if (seq !== state.seq) return;  // a newer configuration was asked for meanwhile
    if (!response.ok) {
      showError(answer.control, answer.error);
      return;
    }
    clearErrors();
    viewEl.classList.remove("stale");
    accept(answer, query(values));
    history.replaceState(null, "", "?" + state.query);
  }

  function accept(payload, configQuery) {
    stop();
    state.payload = payload;
    state.query = configQuery;
    state.details = new Map();
    state.selected = null;
    if (payload.texts.input_from === "size") form.elements.input.value = payload.texts.input;
    describeEl.textContent = payload.describe;
    const wanted = payload.transposed ? "transposed" : (state.tab === "transposed" ? "forward" : state.tab);
    selectTab(wanted);
  }

  // -- details: asked of the server (or read from the snapshot), one per cell, cached per configuration

  function detail(kind, at) {
    const key = kind + ":" + at;
    if (!state.details.has(key)) {
      if (snapshot) state.details.set(key, Promise.resolve(data.details[key]));
      else {
        const url = `api/detail?${state.query}&kind=${kind}&at=${encodeURIComponent(at)}`;
        state.details.set(key, fetch(url).then((r) => r.json().then((j) => (r.ok ? j : Promise.reject(new Error(j.error))))));
      }
    }
    return state.details.get(key);
  }

  // The details of one cell for the hover in progress; null when asking failed (the message is shown) or
  // when the pointer moved on meanwhile.
  async function current(kind, at) {
    const seq = ++state.hoverSeq;
    try {
      const found = await detail(kind, at);
      return seq === state.hoverSeq ? found : null;
    } catch (error) {
      showError(null, error.message);
      return null;
    }
  }

  // -- building blocks ---------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  // A 3-d array of value strings as one grid per leading index ("channel c"). cell(index, value) gives a
  // cell's attributes; onSelect(index) runs on hover and on focus. Arrow keys move within a grid (one tab
  // stop per grid), Home/End to a row's ends.
  function grids(values, options) {
    const wrap = el("div", { class: "channels" });
    const first = values.length ? values[0] : [];
    const caption = options.caption || ((c) => `channel ${c}`);
    values.forEach((plane, c) => {
      const grid = el("div", {
        class: "grid", role: "grid", "aria-label": `${options.label}, ${caption(c)}`,
      });
      // Through the CSSOM: the page's Content-Security-Policy refuses style attributes.
      grid.style.gridTemplateColumns = `repeat(${plane.length ? plane[0].length : 0}, minmax(var(--cell), auto))`;
      plane.forEach((row, y) => {
        const rowEl = el("div", { role: "row" });
        row.forEach((value, x) => {
          const index = `${c},${y},${x}`;
          const attrs = Object.assign({ role: "gridcell", class: "cell", "data-index": index, tabindex: "-1", text: value },
            options.cell ? options.cell(index, value, [c, y, x]) : {});
          rowEl.append(el("div", attrs));
        });
        grid.append(rowEl);
      });
      const start = grid.querySelector(".cell");
      if (start) start.setAttribute("tabindex", "0");
      if (options.onSelect) wire(grid, options.onSelect);
      wrap.append(el("figure", { class: "channel" }, el("figcaption", { text: caption(c) }), grid));
    });
    if (!first.length) wrap.append(el("p", { class: "hint", text: "(empty)" }));
    return wrap;
  }

  function wire(grid, onSelect) {
    grid.addEventListener("mouseover", (event) => {
      const cell = event.target.closest(".cell");
      if (cell) onSelect(cell.dataset.index, false);
    });
    grid.addEventListener("focusin", (event) => {
      const cell = event.target.closest(".cell");
      if (!cell) return;
      for (const other of grid.querySelectorAll('.cell[tabindex="0"]')) other.setAttribute("tabindex", "-1");
      cell.setAttribute("tabindex", "0");
      onSelect(cell.dataset.index, true);
    });
    grid.addEventListener("keydown", (event) => {
      const cell = event.target.closest(".cell");
      if (!cell) return;
      const parts = cell.dataset.index.split(",").map(Number);
      const [y, x] = parts.slice(-2);
      const lead = parts.slice(0, -2).join(",");
      const moves = { ArrowUp: [y - 1, x], ArrowDown: [y + 1, x], ArrowLeft: [y, x - 1], ArrowRight: [y, x + 1],
        Home: [y, 0], End: [y, Infinity] };
      if (!(event.key in moves)) return;
      let [ny, nx] = moves[event.key];
      if (nx === Infinity) nx = grid.querySelectorAll(`[data-index^="${lead},${y},"]`).length - 1;
      const next = grid.querySelector(`[data-index="${lead},${ny},${nx}"]`);
      if (next) {
        next.focus();
        event.preventDefault();
      }
    });
  }

  function panel(title, sub, ...content) {
    return el("div", { class: "panel" }, el("h2", { text: title }), sub ? el("p", { class: "sub", text: sub }) : null, ...content);
  }

  function check(holds, text) {
    return el("p", { class: "check " + (holds ? "holds" : "fails"), text });
  }

  // Give class `cls` to exactly those cells matching `selector` whose index is in `indices`.
  function mark(selector, cls, indices) {
    const wanted = new Set(indices);
    for (const node of viewEl.querySelectorAll(selector)) node.classList.toggle(cls, wanted.has(node.dataset.index));
  }

  function canvasCell(canvas, label) {
    return (index, value, [c, y, x]) => {
      const role = canvas.roles[c][y][x];
      const source = canvas.sources[c][y][x];
      const unread = !canvas.read[c][y][x];
      const what = role === "sample" ? `${label}[${source}] = ${value}` :
        role === "inserted" ? "a zero inserted by the stride" :
          source ? `padding: a copy of ${label}[${source}] = ${value}` : "padding: zero";
      return { class: `cell role-${role}${unread ? " unread" : ""}`, "data-source": source,
        "aria-label": `${index}: ${what}${unread ? ", never read" : ""}`, title: `${what}${unread ? " (never read)" : ""}` };
    };
  }

  function legend(items) {
    return el("div", { class: "legend", "aria-label": "colour key" },
      ...items.map(([cls, text]) => el("span", {}, el("span", { class: "cell " + cls, "aria-hidden": "true", text: cls === "unread" ? "" : " " }), text)));
  }

  function termsTable(headers, rows, limit) {
    if (!rows.length) return null;
    const table = el("table", { class: "terms" });
    table.append(el("tr", {}, ...headers.map((h) => el("th", { scope: "col", text: h }))));
    rows.slice(0, limit).forEach((cells) => table.append(el("tr", {}, ...cells.map((v) => el("td", { text: v })))));
    const wrap = el("div", {}, table);
    if (rows.length > limit) wrap.append(el("p", { class: "hint", text: `… and ${rows.length - limit} more terms` }));
    return wrap;
  }

  // -- tabs ------------------------------------------------------------------------------------

  for (const tab of document.querySelectorAll('[role="tab"]')) {
    tab.addEventListener("click", () => selectTab(tab.dataset.view));
    tab.addEventListener("keydown", (event) => {
      const tabs = [...document.querySelectorAll('[role="tab"]:not(:disabled)')];
      const i = tabs.indexOf(tab);
      const next = { ArrowRight: tabs[(i + 1) % tabs.length], ArrowLeft: tabs[(i - 1 + tabs.length) % tabs.length] }[event.key];
      if (next) { next.focus(); selectTab(next.dataset.view); }
    });
  }

  function selectTab(name) {
    const transposed = state.payload && state.payload.transposed;
    for (const tab of document.querySelectorAll('[role="tab"]')) {
      const usable = (tab.dataset.view === "transposed") === Boolean(transposed);
      tab.disabled = !usable;
      tab.title = usable ? "" : (transposed ? "turn transposed off for this view" : "turn transposed on for this view");
      tab.setAttribute("aria-selected", String(tab.dataset.view === name));
      tab.tabIndex = tab.dataset.view === name ? 0 : -1;
    }
    state.tab = name;
    render();
  }

  function render() {
    stop();
    viewEl.replaceChildren();
    if (!state.payload) return;
    viewEl.setAttribute("aria-labelledby", "tab-" + state.tab);
    if (state.tab === "backward") renderBackward(state.payload);
    else renderForward(state.payload);
  }

  // -- forward (and transposed) view ------------------------------------------------------------

  function renderForward(p) {
    const transposed = p.transposed;
    state.order = [];
    p.output.values.forEach((plane, o) => plane.forEach((row, y) => row.forEach((_, x) => state.order.push(`${o},${y},${x}`))));
    const position = el("span", { class: "hint", "aria-live": "polite", "data-testid": "position" });
    const playButton = el("button", { type: "button", "data-testid": "play", "aria-pressed": "false", text: "▶ Play" });
    const speed = el("select", { "aria-label": "play speed" },
      el("option", { value: "1600", text: "slow" }), el("option", { value: "800", selected: true, text: "medium" }),
      el("option", { value: "350", text: "fast" }));
    const toolbar = el("div", { class: "toolbar", role: "group", "aria-label": "slide through the outputs" },
      el("button", { type: "button", "data-testid": "step-back", text: "◀ Step" }), playButton,
      el("button", { type: "button", "data-testid": "step", text: "Step ▶" }), speed, position);
    toolbar.children[0].addEventListener("click", () => step(-1));
    toolbar.children[2].addEventListener("click", () => step(1));
    playButton.addEventListener("click", () => (state.playTimer ? stop() : play(Number(speed.value))));

    const canvasTitle = transposed ? "Input, spread by the stride and padded" : "Input, padded";
    const canvasSub = transposed ?
      "The kernel slides over this at stride 1: samples, the zeros the stride inserts (dotted) and the padding (hatched)." :
      "Padding is hatched; × marks a cell no window reads. Hover or focus an output to see its window.";
    const panels = el("div", { class: "panels" },
      panel(canvasTitle, canvasSub, grids(p.canvas.values, {
        label: canvasTitle, cell: (i, v, at) => Object.assign(canvasCell(p.canvas, "input")(i, v, at), { "data-testid": "in-cell" }),
      })),
      panel(transposed ? "Kernel, rotated 180°" : "Kernel", p.kernel.orientation, grids(flattenKernel(p.kernel.applied), {
        label: "kernel", caption: kernelCaption(p.kernel.applied_shape[1]), cell: (i) => ({ "data-testid": "k-cell", "data-index": kernelIndex(i, p.kernel.applied_shape[1]) }),
      })),
      panel("Output", `${p.op} output, ${p.output.shape.join(" × ")}`, grids(p.output.values, {
        label: "output", cell: () => ({ "data-testid": "out-cell" }), onSelect: (at) => selectOutput(at),
      })));
    if (transposed) panels.append(panel("Input as given", "before the stride spreads it", grids(p.input.values, { label: "input as given" })));
    const sizes = el("div", { class: "panel" }, el("h2", { text: "Output size" }),
      ...p.sizes.map((line) => el("p", { class: "sizes", text: line })), el("p", { class: "hint", text: p.unread }),
      ...(p.checks || []).map((c) => check(c.holds, c.text)));
    const detailEl = el("div", { class: "detail", id: "detail", "aria-live": "polite" },
      el("p", { class: "hint", text: "Hover or focus an output cell (Tab to the output grid, then the arrow keys), or press Play." }));
    viewEl.append(toolbar, panels, legend([["in-window", "the window"], ["role-padding", "padding"],
      ["role-inserted", "zero inserted by the stride"], ["unread", "never read"], ["selected", "the output"]]),
    sizes, detailEl);
  }

  // The kernel (O, C, kH, kW) as one grid per (filter, channel), indexed "o,c,i,j".
  function flattenKernel(kernel) {
    const planes = [];
    kernel.forEach((filter) => filter.forEach((plane) => planes.push(plane)));
    return planes;
  }

  // The caption of flattenKernel's plane c: "filter o, channel c" (channels counted within the group).
  function kernelCaption(channels, outer = "filter", inner = "channel") {
    return (plane) => `${outer} ${Math.floor(plane / channels)}, ${inner} ${plane % channels}`;
  }

  // A cell "plane,i,j" of flattenKernel's grids as the kernel's own index "o,c,i,j".
  function kernelIndex(index, channels) {
    const [plane, i, j] = index.split(",").map(Number);
    return `${Math.floor(plane / channels)},${plane % channels},${i},${j}`;
  }

  async function selectOutput(at, fromPlay) {
    if (!fromPlay) stop();
    state.selected = at;
    mark('[data-testid="out-cell"]', "selected", [at]);
    const position = viewEl.querySelector('[data-testid="position"]');
    if (position) position.textContent = `output ${state.order.indexOf(at) + 1} of ${state.order.length}: [${at}]`;
    const d = await current("out", at);
    if (!d) return;
    mark('[data-testid="in-cell"]', "in-window", d.window);
    mark('[data-testid="k-cell"]', "tap", d.terms.map((t) => t.tap));
    const p = state.payload;
    const detailEl = document.getElementById("detail");
    const parts = [el("h3", { text: `output[${at}] = ${d.value}` }),
      el("p", { class: "hint", text: "each cell of the window times the kernel tap it meets, summed:" }),
      el("p", { class: "equation", "data-testid": "equation", text: d.equation }),
      check(d.agrees, `the sum equals ${p.op}'s output ${d.value}`),
      termsTable(["window cell", "", "value", "× kernel", "= product"],
        d.terms.map((t) => [t.cell, t.role === "sample" ? "" : t.role, t.value, t.weight, t.product]), 64)];
    if (d.im2col) {
      const m = d.im2col;
      parts.push(el("h3", { text: `im2col: row ${m.row} of the unrolled input · column ${m.column} of the filter matrix` + (p.im2col.unrolled_shape.length > 2 ? ` (group ${m.group})` : "") }),
        el("p", { class: "hint", text: `unrolled input ${p.im2col.unrolled_shape.join(" × ")}, filters ${p.im2col.filters_shape.join(" × ")}: this output's window, laid flat, and its filter` }),
        strip(m.labels, m.row_values, "row"), strip(m.labels, m.column_values, "column"),
        check(m.agrees, `row · column = ${m.dot}`));
    }
    if (d.conv_matrix) {
      const m = d.conv_matrix;
      parts.push(el("h3", { text: `Convolution matrix: row ${m.row} of M (${m.shape.join(" × ")})` }),
        el("p", { class: "hint", text: m.dense ? "the whole row, one column per input sample (outlined: where the window's taps land), times the input laid flat" : "its stored entries (the rest are zero), with the input samples they meet" }),
        strip(m.columns, m.values, "M row", m.stored), strip(m.columns, m.input, "input", m.stored),
        check(m.agrees, `M[${m.row}, :] · x = ${m.dot}`));
    }
    detailEl.replaceChildren(...parts);
  }

  // One row of numbers, each labelled by its index; `marked` (optional) outlines the entries the row stores.
  function strip(labels, values, name, marked) {
    return el("div", { class: "strip", role: "list", "aria-label": name },
      el("span", { class: "hint", text: name + ":" }),
      ...values.map((v, i) => el("span", { class: "cell" + (marked && marked[i] ? " tap" : ""), role: "listitem" },
        el("small", { text: labels[i] }), v)));
  }

  function step(by) {
    if (!state.order.length) return;
    const i = state.order.indexOf(state.selected);
    const next = state.order[(i + by + state.order.length) % state.order.length];
    focusOutput(next, false);
  }

  function focusOutput(at, fromPlay) {
    const cell = viewEl.querySelector(`[data-testid="out-cell"][data-index="${at}"]`);
    if (cell) for (const other of cell.closest(".grid").querySelectorAll('.cell[tabindex="0"]')) other.setAttribute("tabindex", "-1");
    if (cell) cell.setAttribute("tabindex", "0");
    selectOutput(at, fromPlay);
  }

  function play(interval) {
    const button = viewEl.querySelector('[data-testid="play"]');
    button.textContent = "⏸ Pause";
    button.setAttribute("aria-pressed", "true");
    const advance = () => {
      const i = state.order.indexOf(state.selected);
      focusOutput(state.order[(i + 1) % state.order.length], true);
    };
    advance();
    state.playTimer = setInterval(advance, interval);
  }

  function stop() {
    if (!state.playTimer) return;
    clearInterval(state.playTimer);
    state.playTimer = null;
    const button = viewEl.querySelector('[data-testid="play"]');
    if (button) { button.textContent = "▶ Play"; button.setAttribute("aria-pressed", "false"); }
  }

  // -- backward view ----------------------------------------------------------------------------

  function renderBackward(p) {
    const b = p.backward;
    const gradients = el("div", { class: "panels" },
      panel("grad_output", b.grad_output_default ? "ones (set your own in the Backward control)" : "as given",
        grids(b.grad_output.values, { label: "grad_output", cell: () => ({ "data-testid": "out-cell" }) })),
      panel("Input gradient ∂L/∂x", "hover or focus a sample: every output that read it, and its gradient two ways",
        grids(b.grad_input.values, { label: "input gradient", cell: () => ({ "data-testid": "in-cell" }), onSelect: (at) => selectInput(at) })),
      panel("Weight gradient ∂L/∂w", "hover or focus a weight: its gradient as a correlation of the input with grad_output",
        grids(flattenKernel(b.grad_weight.values), {
          label: "weight gradient", caption: kernelCaption(b.grad_weight.shape[1]),
          cell: (i) => ({ "data-testid": "w-cell", "data-index": kernelIndex(i, b.grad_weight.shape[1]) }),
          onSelect: (at) => selectWeight(at),
        })));
    const sources = el("div", { class: "panels" },
      panel("Input, padded", "the hovered sample (and its copies in the padding); the cells a weight's gradient reads",
        grids(p.canvas.values, { label: "padded input", cell: (i, v, at) => Object.assign(canvasCell(p.canvas, "input")(i, v, at), { "data-testid": "x-cell" }) })),
      panel("grad_output, spread by the stride and padded", "the full correlation slides the rotated kernel over this",
        grids(b.full_canvas.values, { label: "spread grad_output", cell: (i, v, at) => Object.assign(canvasCell(b.full_canvas, "grad_output")(i, v, at), { "data-testid": "g-cell" }) })),
      panel("Kernel rotated 180°", "channels swapped: (C_in, C_out/groups, kH, kW)",
        grids(flattenKernel(b.rotated.values), { label: "rotated kernel", caption: kernelCaption(b.rotated.shape[1], "input channel", "output channel") })));
    const detailEl = el("div", { class: "detail", id: "detail", "aria-live": "polite" },
      el("p", { class: "hint", text: "Hover or focus a cell of the input gradient or of the weight gradient." }));
    viewEl.append(gradients, ...b.checks.map((c) => check(c.holds, c.text)), detailEl, sources,
      legend([["reads", "outputs that read the sample"], ["selected", "the sample or weight"], ["in-window", "cells of the window"],
        ["role-padding", "padding"], ["role-inserted", "zero inserted by the stride"], ["unread", "never read"]]));
  }

  async function selectInput(at) {
    mark('[data-testid="in-cell"]', "selected", [at]);
    const d = await current("in", at);
    if (!d) return;
    mark('[data-testid="out-cell"]', "reads", d.readers);
    mark('[data-testid="g-cell"]', "in-window", d.full.window);
    mark('[data-testid="x-cell"]', "in-window", []);
    mark('[data-testid="x-cell"]', "selected", d.copies);  // where the sample sits in the padded input
    mark('[data-testid="w-cell"]', "selected", []);
    document.getElementById("detail").replaceChildren(
      el("h3", { text: `∂L/∂x[${at}] = ${d.value}` }),
      el("p", { class: "hint", text: `read by ${d.readers.length} output${d.readers.length === 1 ? "" : "s"} (highlighted in grad_output)` }),
      el("div", { class: "side-by-side" },
        el("div", {}, el("h3", { text: "Scatter-add: every output that read it" }),
          el("p", { class: "equation", "data-testid": "scatter-equation", text: d.scatter.equation }),
          check(d.scatter.agrees, `grad_output · weight, summed over the readers = ${d.scatter.sum}`),
          termsTable(["output", "grad", "× weight", "tap", "= product"], d.scatter.terms.map((t) => [t.out, t.grad, t.weight, t.tap, t.product]), 48)),
        el("div", {}, el("h3", { text: "Full correlation with the rotated kernel" }),
          el("p", { class: "equation", "data-testid": "full-equation", text: d.full.equation }),
          check(d.full.agrees, `the window of the spread grad_output · the rotated kernel = ${d.full.sum}`),
          termsTable(["cell", "", "grad", "× rotated", "= product"], d.full.terms.map((t) => [t.cell, t.role === "sample" ? "" : t.role, t.grad, t.weight, t.product]), 48))),
      el("p", { class: "check " + (d.agrees ? "holds" : "fails"), "data-testid": "grad-agree",
        text: d.agrees ? `both equal ${d.value}` : "the two sums differ" }));
  }

  async function selectWeight(at) {
    mark('[data-testid="w-cell"]', "selected", [at]);
    const d = await current("weight", at);
    if (!d) return;
    mark('[data-testid="x-cell"]', "selected", []);
    mark('[data-testid="x-cell"]', "in-window", d.window);
    mark('[data-testid="out-cell"]', "reads", d.terms.map((t) => t.out));
    mark('[data-testid="g-cell"]', "in-window", []);
    mark('[data-testid="in-cell"]', "selected", []);
    document.getElementById("detail").replaceChildren(
      el("h3", { text: `∂L/∂w[${at}] = ${d.value}` }),
      el("p", { class: "hint", text: `the padded input, read where tap ${d.applied_tap} meets each window, times grad_output:` }),
      el("p", { class: "equation", "data-testid": "weight-equation", text: d.equation }),
      check(d.agrees, `equals convolab.grad.conv2d_weight: ${d.value}`),
      termsTable(["input cell", "x", "× grad", "output", "= product"], d.terms.map((t) => [t.cell, t.x, t.grad, t.out, t.product]), 48));
  }

  // -- start ------------------------------------------------------------------------------------

  form.addEventListener("input", (event) => {
    const name = event.target.name;
    if (name === "input") form.elements.input_from.value = "text";
    if (name === "size" || name === "channels") form.elements.input_from.value = "size";
    syncEnabled();
    schedule();
  });
  form.addEventListener("submit", (event) => event.preventDefault());

  if (snapshot) {
    document.getElementById("snapshot-note").hidden = false;
    fillControls(data.view.texts);
    for (const element of form.elements) element.disabled = true;
    accept(data.view, "");
  } else {
    const fromUrl = Object.fromEntries(new URLSearchParams(location.search));
    fillControls(Object.assign({}, data.defaults, data.initial, fromUrl));
    refresh();
  }
})();
