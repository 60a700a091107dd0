// Bundles src/extension.ts into dist/extension.js and writes dist/THIRD_PARTY_NOTICES.md with the
// licence texts of every npm package that ends up inside the bundle.
import * as esbuild from 'esbuild';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

const result = await esbuild.build({
  absWorkingDir: root,
  entryPoints: ['src/extension.ts'],
  outfile: 'dist/extension.js',
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  external: ['vscode'],
  minify: true,
  metafile: true,
  logLevel: 'warning',
});

// Package folders (node_modules/<name> or node_modules/@scope/<name>) the bundle took code from.
const folders = new Set();
for (const input of Object.keys(result.metafile.inputs)) {
  const m = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(input);
  if (m) folders.add(m[1]);
}

const sections = [];
for (const folder of [...folders].sort()) {
  const dir = join(root, folder);
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  const licenceFile = readdirSync(dir).find((f) => /^(licen[cs]e|copying)(\.(md|txt))?$/i.test(f));
  if (!licenceFile) throw new Error(`${pkg.name}: no licence file found in ${folder}`);
  const text = readFileSync(join(dir, licenceFile), 'utf8').trim();
  sections.push(`## ${pkg.name} ${pkg.version} (${pkg.license})\n\n\`\`\`text\n${text}\n\`\`\``);
}

if (!existsSync(join(root, 'dist'))) mkdirSync(join(root, 'dist'));
writeFileSync(
  join(root, 'dist', 'THIRD_PARTY_NOTICES.md'),
  `# Third-party notices\n\ndist/extension.js bundles the following npm packages.\n\n${sections.join('\n\n')}\n`,
);
const size = (result.metafile.outputs['dist/extension.js'].bytes / 1024).toFixed(0);
console.log(`dist/extension.js: ${size} KiB, ${folders.size} bundled packages (dist/THIRD_PARTY_NOTICES.md)`);
