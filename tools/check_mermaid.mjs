// Check that mermaid diagrams parse, and render, in mermaid 11 (the version in package.json).
//
//   node tools/check_mermaid.mjs [--parse-only] [--chromium PATH] [--svg-dir DIR] FILE.mmd...
//
// Two passes, because each catches what the other cannot:
//  1. mermaid.parse() in node with a jsdom window (mermaid needs DOMPurify, which
//     needs a DOM): the grammar, for every file, fast.
//  2. mermaid.render() in headless Chromium (Debian's `chromium`), loading the UMD
//     bundle from node_modules: the layout (dagre and its subgraph handling),
//     which can throw on diagrams that parse fine. Skipped with --parse-only or
//     when no Chromium is found (said so on stderr, not silently).
// Exit 0 when every file passes, 1 otherwise, 2 on usage errors.
// Driven by tools/check_mermaid.py, which renders every config to tools/out/.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

function usage(message) {
  console.error(`check_mermaid: ${message}`);
  console.error('usage: node tools/check_mermaid.mjs [--parse-only] [--chromium PATH] [--svg-dir DIR] FILE.mmd...');
  process.exit(2);
}

const args = process.argv.slice(2);
let parseOnly = false;
let chromium = null;
let svgDir = null;
const files = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--parse-only') parseOnly = true;
  else if (args[i] === '--chromium') chromium = args[++i] ?? usage('--chromium needs a path');
  else if (args[i] === '--svg-dir') svgDir = args[++i] ?? usage('--svg-dir needs a path');
  else if (args[i].startsWith('--')) usage(`unknown option ${args[i]}`);
  else files.push(args[i]);
}
if (files.length === 0) usage('no diagram given');

const diagrams = files.map((file) => ({ file, text: fs.readFileSync(file, 'utf8') }));

// ---- pass 1: parse in node -------------------------------------------------------------
const { JSDOM } = await import('jsdom');
const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import('mermaid');
mermaid.initialize({ startOnLoad: false, securityLevel: 'strict' });
const version = JSON.parse(
  fs.readFileSync(path.join(here, 'node_modules', 'mermaid', 'package.json'), 'utf8'),
).version;

let failures = 0;
for (const { file, text } of diagrams) {
  try {
    await mermaid.parse(text);
  } catch (error) {
    failures++;
    console.log(`FAIL parse  ${file}\n${String(error.message ?? error).replace(/^/gm, '    ')}`);
  }
}
console.log(`mermaid ${version}: parsed ${diagrams.length} diagram(s), ${failures} failure(s)`);

// ---- pass 2: render in headless Chromium ------------------------------------------------
function findChromium() {
  for (const name of ['chromium', 'chromium-browser', 'google-chrome']) {
    const found = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
    if (found.status === 0 && found.stdout.trim()) return found.stdout.trim();
  }
  return null;
}

if (!parseOnly) {
  chromium = chromium ?? findChromium();
  if (chromium === null) {
    console.error('check_mermaid: no chromium found: render pass skipped (apt-get install chromium)');
  } else {
    const bundle = pathToFileURL(path.join(here, 'node_modules', 'mermaid', 'dist', 'mermaid.min.js'));
    const payload = JSON.stringify(diagrams.map((d) => d.text)).replace(/</g, '\\u003c');
    const html = `<!doctype html><html><head><meta charset="utf-8"></head><body>
<pre id="out">pending</pre><div id="stage"></div>
<script src="${bundle.href}"></script>
<script>
const diagrams = ${payload};
const keepSvg = ${svgDir !== null};
(async () => {
  const results = [];
  try {
    mermaid.initialize({ startOnLoad: false, securityLevel: 'strict' });
    for (let i = 0; i < diagrams.length; i++) {
      try {
        const { svg } = await mermaid.render('d' + i, diagrams[i], document.getElementById('stage'));
        const nodes = (svg.match(/class="node /g) || []).length;
        const error = svg.includes('Syntax error in text') ? 'mermaid drew its error diagram' : null;
        results.push({ ok: error === null, nodes, error, svg: keepSvg ? svg : undefined });
      } catch (e) {
        results.push({ ok: false, error: String((e && e.message) || e) });
      }
    }
  } catch (e) {
    results.push({ ok: false, error: 'setup: ' + String((e && e.message) || e) });
  }
  // base64: the DOM dump HTML-escapes text, and SVG is full of what it escapes.
  const json = new TextEncoder().encode(JSON.stringify(results));
  let binary = '';
  for (const byte of json) binary += String.fromCharCode(byte);
  document.getElementById('out').textContent = 'RESULTS' + btoa(binary) + 'END';
})();
</script></body></html>`;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'check-mermaid-'));
    const page = path.join(dir, 'page.html');
    fs.writeFileSync(page, html);
    const run = spawnSync(
      chromium,
      [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-dev-shm-usage',
        '--allow-file-access-from-files',
        `--user-data-dir=${path.join(dir, 'profile')}`,
        '--virtual-time-budget=60000',
        '--dump-dom',
        pathToFileURL(page).href,
      ],
      { encoding: 'utf8', timeout: 180_000, maxBuffer: 64 * 1024 * 1024 },
    );
    fs.rmSync(dir, { recursive: true, force: true });
    const match = /RESULTS(.*?)END/s.exec(run.stdout ?? '');
    if (match === null) {
      failures++;
      console.log(`FAIL render: chromium gave no results (exit ${run.status})`);
      console.log(String(run.stderr ?? '').split('\n').slice(-15).join('\n'));
    } else {
      const results = JSON.parse(Buffer.from(match[1], 'base64').toString('utf8'));
      let rendered = 0;
      results.forEach((result, i) => {
        const file = diagrams[i] ? diagrams[i].file : '(setup)';
        if (svgDir !== null && result.svg) {
          fs.mkdirSync(svgDir, { recursive: true });
          fs.writeFileSync(path.join(svgDir, path.basename(file).replace(/\.mmd$/, '') + '.svg'), result.svg);
        }
        if (result.ok) {
          rendered++;
          console.log(`ok   render  ${file} (${result.nodes} nodes)`);
        } else {
          failures++;
          console.log(`FAIL render  ${file}\n    ${result.error}`);
        }
      });
      if (results.length < diagrams.length) {
        failures++;
        console.log(`FAIL render: only ${results.length} of ${diagrams.length} results`);
      }
      console.log(`chromium: rendered ${rendered} of ${diagrams.length} diagram(s)`);
    }
  }
}

process.exit(failures === 0 ? 0 : 1);
