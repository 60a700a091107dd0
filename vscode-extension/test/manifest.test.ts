/**
 * Keeps protocol.ts, package.json and the server's mole_lsp/server/protocol.py in step, and checks the
 * packaging rules (exact pins, @types/vscode = engines.vscode, pure modules without 'vscode').
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { EXTENSION_COMMANDS } from '../src/commands';
import * as protocol from '../src/protocol';
import { CLIENT_SETTING_NAMES, RESTRICTED_SETTING_NAMES, SERVER_SETTING_NAMES, SERVER_SETTING_SPECS } from '../src/settings';

// Compiled to out/test/*.js: the extension folder is two levels up, the repository three.
const extRoot = join(__dirname, '..', '..');
const repoRoot = join(extRoot, '..');
const protocolPy = join(repoRoot, 'mole_lsp', 'server', 'protocol.py');

interface Manifest {
  name: string;
  version: string;
  publisher: string;
  license: string;
  main: string;
  capabilities: { untrustedWorkspaces: { supported: boolean | 'limited'; restrictedConfigurations?: string[] } };
  engines: { vscode: string };
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
  contributes: {
    commands: { command: string; title: string; category?: string }[];
    configuration: { properties: Record<string, Record<string, unknown>> };
  };
}

const manifest = JSON.parse(readFileSync(join(extRoot, 'package.json'), 'utf8')) as Manifest;
const properties = manifest.contributes.configuration.properties;

/** Python literal (as written in protocol.py's SETTINGS) → JSON value. */
function pyLiteral(text: string): unknown {
  const json = text.trim().replace(/\bTrue\b/g, 'true').replace(/\bFalse\b/g, 'false').replace(/\bNone\b/g, 'null');
  return JSON.parse(json);
}

function typedDictFields(py: string, name: string): string[] {
  const m = new RegExp(`^class ${name}\\(TypedDict\\):\\n((?:    .*\\n|\\n)+)`, 'm').exec(py);
  assert.ok(m, `class ${name} not found in protocol.py`);
  return [...(m[1] ?? '').matchAll(/^    (\w+):/gm)].map((x) => x[1] ?? '');
}

describe('protocol.ts mirrors mole_lsp/server/protocol.py', { skip: !existsSync(protocolPy) && 'protocol.py not found' }, () => {
  const py = existsSync(protocolPy) ? readFileSync(protocolPy, 'utf8') : '';

  it('command and notification names', () => {
    const constants = Object.fromEntries([...py.matchAll(/^(CMD_\w+|NOTIFY_\w+) = "([^"]+)"/gm)].map((m) => [m[1], m[2]]));
    const ts = protocol as unknown as Record<string, unknown>;
    assert.ok(Object.keys(constants).length >= 7);
    for (const [name, value] of Object.entries(constants)) assert.equal(ts[name], value, name);
    const tsNames = Object.keys(ts).filter((k) => /^(CMD|NOTIFY)_/.test(k));
    assert.deepEqual(tsNames.sort(), Object.keys(constants).sort());
    const commandsTuple = /^COMMANDS = \(([^)]*)\)/m.exec(py)?.[1] ?? '';
    assert.deepEqual(
      [...protocol.COMMANDS],
      commandsTuple.split(',').map((s) => constants[s.trim()]).filter(Boolean),
    );
  });

  it('states', () => {
    const states = /^State = Literal\[([^\]]*)\]/m.exec(py)?.[1] ?? '';
    assert.deepEqual([...protocol.STATES], [...states.matchAll(/"(\w+)"/g)].map((m) => m[1]));
  });

  it('Status and PackInfo fields', () => {
    const status: Record<keyof protocol.Status, true> = {
      state: true,
      activeExpert: true,
      activeLanguage: true,
      activeUri: true,
      vscodeLanguageId: true,
      baseOnly: true,
      offline: true,
      message: true,
    };
    assert.deepEqual(Object.keys(status).sort(), typedDictFields(py, 'Status').sort());
    const packInfo: Record<keyof protocol.PackInfo, true> = {
      language: true,
      name: true,
      vscodeLanguageIds: true,
      installed: true,
      available: true,
      sizeBytes: true,
      revision: true,
    };
    assert.deepEqual(Object.keys(packInfo).sort(), typedDictFields(py, 'PackInfo').sort());
  });

  it('settings names and defaults', () => {
    const block = /^SETTINGS[^=]*= \{\n([\s\S]*?)^\}/m.exec(py)?.[1] ?? '';
    const entries = [...block.matchAll(/^\s*"(\w+)": \((\w+|\([^)]*\)), (\{[^}]*\}|"[^"]*"|[^,]+),/gm)];
    const defaults = Object.fromEntries(entries.map((m) => [m[1], pyLiteral(m[3] ?? '')]));
    assert.equal(entries.length, SERVER_SETTING_NAMES.length, 'number of settings');
    assert.deepEqual(defaults, protocol.SERVER_SETTING_DEFAULTS);
  });

  it('the device pattern', () => {
    const m = /^DEVICE_PATTERN = r"([^"]+)"$/m.exec(py);
    assert.ok(m, 'DEVICE_PATTERN in protocol.py');
    assert.equal(protocol.DEVICE_PATTERN, m[1]);
    assert.equal(properties['mole.device']?.pattern, m[1], 'package.json mole.device.pattern');
    assert.match(py, /"device": \(str, "auto", "[^"]*cuda:N[^"]*"\)/, 'the help text names cuda:N');
  });

  it('numeric ranges quoted in the help texts', () => {
    for (const [name, spec] of Object.entries(SERVER_SETTING_SPECS)) {
      if (spec.kind !== 'int') continue;
      const line = new RegExp(`^\\s*"${name}": .*\\((\\d+)-(\\d+)\\)\\.?"\\),$`, 'm').exec(py);
      assert.ok(line, `range of ${name} in protocol.py`);
      assert.deepEqual([Number(line[1]), Number(line[2])], [spec.min, spec.max], name);
    }
  });
});

describe('package.json', () => {
  it('contributes every server setting with its protocol default and bounds', () => {
    for (const name of SERVER_SETTING_NAMES) {
      const prop = properties[`mole.${name}`];
      assert.ok(prop, `mole.${name} is contributed`);
      assert.deepEqual(prop.default, protocol.SERVER_SETTING_DEFAULTS[name], `default of mole.${name}`);
      assert.ok(prop.markdownDescription || prop.description, `mole.${name} has a description`);
      const spec = SERVER_SETTING_SPECS[name];
      if (spec.kind === 'int') {
        assert.equal(prop.type, 'integer');
        assert.equal(prop.minimum, spec.min);
        assert.equal(prop.maximum, spec.max);
      }
      if (spec.kind === 'string' && spec.pattern) {
        assert.equal(prop.pattern, spec.pattern, `pattern of mole.${name}`);
        assert.ok(prop.patternErrorMessage, `mole.${name} explains its pattern`);
        assert.equal(prop.enum, undefined, `mole.${name} takes a pattern, not an enum`);
        for (const example of (prop.examples as string[] | undefined) ?? []) {
          assert.match(example, new RegExp(spec.pattern), `example ${example} of mole.${name}`);
        }
      }
      if (spec.kind === 'bool') assert.equal(prop.type, 'boolean');
    }
  });

  it('contributes the client settings and nothing else', () => {
    const expected = [...SERVER_SETTING_NAMES, ...CLIENT_SETTING_NAMES].map((n) => `mole.${n}`).sort();
    assert.deepEqual(Object.keys(properties).sort(), expected);
    for (const [key, prop] of Object.entries(properties)) {
      assert.ok(prop.markdownDescription || prop.description, `${key} has a description`);
      assert.ok('default' in prop, `${key} has a default`);
    }
  });

  it('restricts in untrusted workspaces exactly the settings the extension reads from user scope only', () => {
    const trust = manifest.capabilities.untrustedWorkspaces;
    assert.equal(trust.supported, 'limited');
    assert.deepEqual(trust.restrictedConfigurations, RESTRICTED_SETTING_NAMES.map((n) => `mole.${n}`));
  });

  it('contributes exactly the extension commands, none clashing with server commands', () => {
    const contributed = manifest.contributes.commands.map((c) => c.command).sort();
    assert.deepEqual(contributed, Object.values(EXTENSION_COMMANDS).sort());
    for (const c of contributed) assert.ok(!(protocol.COMMANDS as readonly string[]).includes(c), `${c} clashes with a server command`);
    for (const c of manifest.contributes.commands) {
      assert.equal(c.category, 'MoLE');
      assert.ok(c.title);
    }
  });

  it('pins exact versions, @types/vscode to engines.vscode, languageclient 11', () => {
    const all = { ...manifest.dependencies, ...manifest.devDependencies };
    for (const [name, version] of Object.entries(all)) assert.match(version, /^\d+\.\d+\.\d+$/, `${name}@${version} is pinned`);
    assert.equal(`^${all['@types/vscode']}`, manifest.engines.vscode);
    assert.match(all['vscode-languageclient'] ?? '', /^11\./);
    const lock = JSON.parse(readFileSync(join(extRoot, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { version?: string }>;
    };
    for (const [name, version] of Object.entries(all)) {
      assert.equal(lock.packages[`node_modules/${name}`]?.version, version, `package-lock has ${name}@${version}`);
    }
  });

  it('names the vsix mole-lsp-0.1.0 and points at the bundle', () => {
    assert.equal(manifest.name, 'mole-lsp');
    assert.equal(manifest.version, '0.1.0');
    assert.equal(manifest.license, 'Apache-2.0');
    assert.equal(manifest.main, './dist/extension.js');
    assert.ok(existsSync(join(extRoot, 'LICENSE')));
  });
});

describe('pure modules', () => {
  it("do not import 'vscode' (only extension.ts may; the rest of the glue is in client/ and features/)", () => {
    const glue = new Set(['extension.ts']);
    const src = join(extRoot, 'src');
    const files = readdirSync(src).filter((f) => f.endsWith('.ts'));
    assert.ok(files.length >= 6);
    for (const f of files) {
      if (glue.has(f)) continue;
      const text = readFileSync(join(src, f), 'utf8');
      assert.doesNotMatch(text, /from ['"]vscode(-languageclient[^'"]*)?['"]|require\(['"]vscode['"]\)/, `${f} imports vscode`);
    }
  });
});
