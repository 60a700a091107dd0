import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';

import {
  PROBE_SCRIPT,
  StderrTail,
  classifyProbe,
  defaultPython,
  expandVariables,
  pipInstallCommandLine,
  resolvePython,
  runProbe,
  serverCommand,
  startupProblemMessage,
  stderrLevel,
  type ProbeOutcome,
  type ResolvedPython,
} from '../src/python';

describe('resolvePython order', () => {
  const calls: string[] = [];
  const fromExt = (value: string | undefined) => async (): Promise<string | undefined> => {
    calls.push('ext');
    return value;
  };
  const fromSettings = (value: string | undefined) => (): string | undefined => {
    calls.push('settings');
    return value;
  };

  it('1. mole.pythonPath wins and the Python extension is not asked', async () => {
    calls.length = 0;
    const r = await resolvePython({
      configured: '/venv/bin/python',
      fromPythonExtension: fromExt('/ext/python'),
      fromPythonSettings: fromSettings('/settings/python'),
      platform: 'linux',
    });
    assert.deepEqual(r, { command: '/venv/bin/python', source: 'setting', notes: [] });
    assert.deepEqual(calls, []);
  });

  it("2. then the Python extension's active interpreter", async () => {
    calls.length = 0;
    const r = await resolvePython({
      configured: '  ',
      fromPythonExtension: fromExt('/ext/python'),
      fromPythonSettings: fromSettings('/settings/python'),
      platform: 'linux',
    });
    assert.equal(r.command, '/ext/python');
    assert.equal(r.source, 'pythonExtension');
    assert.deepEqual(calls, ['ext']);
  });

  it("3. then the Python extension's settings when its API has nothing or fails", async () => {
    const none = await resolvePython({
      fromPythonExtension: fromExt(undefined),
      fromPythonSettings: fromSettings('/settings/python'),
      platform: 'linux',
    });
    assert.equal(none.command, '/settings/python');
    assert.equal(none.source, 'pythonSettings');
    assert.equal(none.notes.length, 1);

    const failing = await resolvePython({
      fromPythonExtension: async () => {
        throw new Error('not ready');
      },
      fromPythonSettings: fromSettings('/settings/python'),
      platform: 'linux',
    });
    assert.equal(failing.source, 'pythonSettings');
    assert.match(failing.notes[0] ?? '', /not ready/);
  });

  it('4. then python3 (python on Windows)', async () => {
    const noExtension = await resolvePython({ platform: 'linux' });
    assert.deepEqual(noExtension, { command: 'python3', source: 'default', notes: [] });
    const nothing = await resolvePython({
      fromPythonExtension: fromExt(''),
      fromPythonSettings: fromSettings(undefined),
      platform: 'darwin',
    });
    assert.equal(nothing.command, 'python3');
    assert.equal(nothing.source, 'default');
    assert.equal((await resolvePython({ platform: 'win32' })).command, 'python');
    assert.equal(defaultPython('linux'), 'python3');
  });

  it('ignores the Python settings when the Python extension is absent', async () => {
    calls.length = 0;
    const r = await resolvePython({ fromPythonSettings: fromSettings('/settings/python'), platform: 'linux' });
    assert.equal(r.source, 'default');
    assert.deepEqual(calls, []);
  });

  it('expands variables in mole.pythonPath', async () => {
    const r = await resolvePython({
      configured: '${workspaceFolder}/.venv/bin/python',
      platform: 'linux',
      variables: { workspaceFolder: '/w' },
    });
    assert.equal(r.command, '/w/.venv/bin/python');
  });
});

describe('expandVariables', () => {
  const ctx = { workspaceFolder: '/work/proj', home: '/home/me', env: { VENV: '/opt/venv' } };
  it('expands ~, ${userHome}, ${workspaceFolder}, ${env:NAME}', () => {
    assert.equal(expandVariables('~/py/bin/python', ctx), '/home/me/py/bin/python');
    assert.equal(expandVariables('~', ctx), '/home/me');
    assert.equal(expandVariables('${userHome}/x', ctx), '/home/me/x');
    assert.equal(expandVariables('${workspaceFolder}/.venv/bin/python', ctx), '/work/proj/.venv/bin/python');
    assert.equal(expandVariables('${env:VENV}/bin/python', ctx), '/opt/venv/bin/python');
    assert.equal(expandVariables('${env:MISSING}python3', ctx), 'python3');
  });
  it('leaves unknown variables and plain names alone', () => {
    assert.equal(expandVariables('${config:x}/python', ctx), '${config:x}/python');
    assert.equal(expandVariables('${workspaceFolder}/python', {}), '${workspaceFolder}/python');
    assert.equal(expandVariables('python3', ctx), 'python3');
    assert.equal(expandVariables('a~b', ctx), 'a~b');
  });
});

describe('serverCommand', () => {
  it('runs the module with serve and the extra arguments', () => {
    assert.deepEqual(serverCommand('/venv/bin/python'), { command: '/venv/bin/python', args: ['-m', 'mole_lsp', 'serve'] });
    assert.deepEqual(serverCommand('python3', ['--log-level', 'debug']), {
      command: 'python3',
      args: ['-m', 'mole_lsp', 'serve', '--log-level', 'debug'],
    });
  });
});

const probeJson = (o: Record<string, unknown>): ProbeOutcome => ({ exitCode: 0, stdout: `${JSON.stringify(o)}\n`, stderr: '' });

describe('classifyProbe', () => {
  it('accepts Python 3.11+ with mole_lsp', () => {
    const v = classifyProbe(
      probeJson({ python: [3, 12, 1], executable: '/v/bin/python', origin: '/v/lib/mole_lsp/__init__.py', found: true, version: '0.1.0' }),
    );
    assert.deepEqual(v, {
      ok: true,
      executable: '/v/bin/python',
      pythonVersion: '3.12.1',
      moleVersion: '0.1.0',
      origin: '/v/lib/mole_lsp/__init__.py',
    });
  });

  it('names each failure', () => {
    assert.equal(classifyProbe({ spawnError: 'ENOENT', exitCode: null, stdout: '', stderr: '' }).ok, false);
    const kind = (o: ProbeOutcome): string | undefined => {
      const v = classifyProbe(o);
      return v.ok ? undefined : v.kind;
    };
    assert.equal(kind({ spawnError: 'ENOENT', exitCode: null, stdout: '', stderr: '' }), 'pythonNotFound');
    assert.equal(kind({ spawnError: 'EACCES', exitCode: null, stdout: '', stderr: '' }), 'pythonNotExecutable');
    assert.equal(kind({ exitCode: 127, stdout: '', stderr: 'sh: python9: not found' }), 'pythonNotFound');
    assert.equal(kind({ timedOut: true, exitCode: null, stdout: '', stderr: '' }), 'probeFailed');
    assert.equal(kind({ exitCode: 1, stdout: '', stderr: 'SyntaxError: invalid syntax' }), 'probeFailed');
    assert.equal(kind(probeJson({ python: [3, 10, 12], executable: '/usr/bin/python3', origin: null, found: true, version: null })), 'pythonTooOld');
    assert.equal(kind(probeJson({ python: [2, 7, 18], executable: '/usr/bin/python', origin: null, found: false, version: null })), 'pythonTooOld');
    assert.equal(kind(probeJson({ python: [3, 11, 0], executable: '/usr/bin/python3', origin: null, found: false, version: null })), 'notInstalled');
    assert.equal(kind(probeJson({ hello: 1 })), 'probeFailed');
  });

  it('reads the last line of stdout (a noisy sitecustomize may print first)', () => {
    const json = JSON.stringify({ python: [3, 11, 4], executable: 'p', origin: 'o', found: true, version: null });
    const v = classifyProbe({ exitCode: 0, stdout: `hello from sitecustomize\n${json}\n`, stderr: '' });
    assert.equal(v.ok, true);
  });
});

describe('runProbe (real processes)', { skip: process.platform === 'win32' }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'mole-probe-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const fakePython = (name: string, body: string): string => {
    const file = join(dir, name);
    writeFileSync(file, `#!/bin/sh\n${body}\n`);
    chmodSync(file, 0o755);
    return file;
  };

  it('reports a missing interpreter', async () => {
    const outcome = await runProbe(join(dir, 'no-such-python'));
    assert.equal(outcome.spawnError, 'ENOENT');
    const v = classifyProbe(outcome);
    assert.equal(v.ok ? '' : v.kind, 'pythonNotFound');
  });

  it('passes the probe script as -c and parses the answer', async () => {
    const python = fakePython(
      'python-ok',
      `[ "$1" = "-c" ] || exit 9\ncase "$2" in *find_spec*) ;; *) exit 8;; esac\necho '{"python": [3, 12, 0], "executable": "/fake/python", "origin": "/fake/mole_lsp/__init__.py", "found": true, "version": "0.1.0"}'`,
    );
    const v = classifyProbe(await runProbe(python));
    assert.deepEqual(v, { ok: true, executable: '/fake/python', pythonVersion: '3.12.0', moleVersion: '0.1.0', origin: '/fake/mole_lsp/__init__.py' });
  });

  it('reports a Python without mole_lsp', async () => {
    const python = fakePython('python-bare', `echo '{"python": [3, 11, 2], "executable": "/fake/python", "origin": null, "found": false, "version": null}'`);
    const v = classifyProbe(await runProbe(python));
    assert.equal(v.ok ? '' : v.kind, 'notInstalled');
  });

  it('reports a crashing interpreter with its stderr', async () => {
    const python = fakePython('python-broken', `echo 'Fatal Python error: init_fs_encoding' >&2\nexit 1`);
    const v = classifyProbe(await runProbe(python));
    assert.equal(v.ok, false);
    if (!v.ok) {
      assert.equal(v.kind, 'probeFailed');
      assert.match(v.detail, /init_fs_encoding/);
    }
  });

  it('gives up on a hanging interpreter', async () => {
    const python = fakePython('python-hang', 'exec sleep 10');
    const outcome = await runProbe(python, 300);
    assert.equal(outcome.timedOut, true);
  });
});

describe('the probe script', () => {
  it('finds the package without importing it', () => {
    assert.match(PROBE_SCRIPT, /find_spec\("mole_lsp"\)/);
    assert.doesNotMatch(PROBE_SCRIPT, /^import mole_lsp/m);
  });
});

describe('pipInstallCommandLine', () => {
  it('quotes paths with spaces for the platform terminal', () => {
    assert.equal(pipInstallCommandLine('/usr/bin/python3', 'linux'), '/usr/bin/python3 -m pip install mole-lsp');
    assert.equal(pipInstallCommandLine('/Users/me/My Env/bin/python', 'darwin'), "'/Users/me/My Env/bin/python' -m pip install mole-lsp");
    assert.equal(pipInstallCommandLine("/tmp/it's/python", 'linux'), `'/tmp/it'\\''s/python' -m pip install mole-lsp`);
    assert.equal(pipInstallCommandLine('C:\\Python312\\python.exe', 'win32'), 'C:\\Python312\\python.exe -m pip install mole-lsp');
    assert.equal(
      pipInstallCommandLine('C:\\Program Files\\Python312\\python.exe', 'win32'),
      '& "C:\\Program Files\\Python312\\python.exe" -m pip install mole-lsp',
    );
  });
});

describe('startupProblemMessage', () => {
  const py: ResolvedPython = { command: '/venv/bin/python', source: 'setting', notes: [] };

  it('offers pip install when mole_lsp is missing', () => {
    const p = startupProblemMessage('notInstalled', py, '', true);
    assert.match(p.message, /pip install mole-lsp/);
    assert.match(p.message, /\/venv\/bin\/python/);
    assert.equal(p.actions[0], 'installPackage');
    assert.ok(p.actions.includes('selectInterpreter'));
  });

  it('says where the interpreter came from when it is missing', () => {
    const p = startupProblemMessage('pythonNotFound', { command: 'python3', source: 'default', notes: [] }, 'ENOENT', false);
    assert.match(p.message, /"python3"/);
    assert.match(p.message, /default interpreter on PATH/);
    assert.match(p.message, /mole\.pythonPath/);
    assert.ok(!p.actions.includes('selectInterpreter'), 'no Python extension, no Select Interpreter');
    assert.ok(p.actions.includes('openSettings'));
  });

  it('has an action for every problem', () => {
    for (const kind of ['pythonNotFound', 'pythonNotExecutable', 'pythonTooOld', 'notInstalled', 'probeFailed'] as const) {
      const p = startupProblemMessage(kind, py, 'detail', true);
      assert.ok(p.message.startsWith('MoLE: '), p.message);
      assert.ok(p.actions.length >= 2, kind);
    }
  });
});

describe('server stderr', () => {
  it('picks a log level per line', () => {
    assert.equal(stderrLevel('INFO mole_lsp.server: ready'), 'info');
    assert.equal(stderrLevel('2026-11-22 WARNING pack rust is stale'), 'warn');
    assert.equal(stderrLevel('ERROR mole_lsp: cannot load'), 'error');
    assert.equal(stderrLevel('Traceback (most recent call last):'), 'error');
    assert.equal(stderrLevel('ModuleNotFoundError: No module named torch'), 'error');
    assert.equal(stderrLevel('  File "x.py", line 3, in <module>'), 'info');
    assert.equal(stderrLevel('torch.cuda.OutOfMemoryError: CUDA out of memory'), 'error');
  });

  it('explains a failed start with the last exception line', () => {
    const tail = new StderrTail(3);
    assert.equal(tail.reason(), undefined);
    for (const l of ['INFO starting', 'Traceback (most recent call last):', '  File "a.py", line 1', 'ImportError: libtorch_cpu.so: cannot open', '']) {
      tail.push(l);
    }
    assert.equal(tail.reason(), 'ImportError: libtorch_cpu.so: cannot open');
    const plain = new StderrTail();
    plain.push('usage: mole-lsp serve [-h]');
    plain.push('mole-lsp serve: error: unrecognized arguments: --bad');
    assert.equal(plain.reason(), 'mole-lsp serve: error: unrecognized arguments: --bad');
    plain.clear();
    assert.equal(plain.reason(), undefined);
  });
});
