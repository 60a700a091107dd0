/**
 * Reading, validating and mapping the `mole.*` settings. No 'vscode' import: the glue passes a
 * getter over `workspace.getConfiguration('mole')`.
 */
import { BACKEND_PATTERN, DEVICE_PATTERN, SERVER_SETTING_DEFAULTS, type ServerSettingName, type ServerSettings } from './protocol';

export const SECTION = 'mole';

type Spec =
  | { kind: 'string'; pattern?: string; accepted?: string }
  | { kind: 'int'; min: number; max: number }
  | { kind: 'bool' }
  | { kind: 'enableMap' }
  | { kind: 'nameMap' };

/** How each server setting is validated on the client (the server validates again). */
export const SERVER_SETTING_SPECS: { readonly [K in ServerSettingName]-?: Spec } = {
  baseModel: { kind: 'string' },
  packRepo: { kind: 'string' },
  packRevision: { kind: 'string' },
  cacheDir: { kind: 'string' },
  device: { kind: 'string', pattern: DEVICE_PATTERN, accepted: 'auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps' },
  backend: { kind: 'string', pattern: BACKEND_PATTERN, accepted: 'auto, torch, llamacpp or openai' },
  endpoint: { kind: 'string' },
  apiKey: { kind: 'string' },
  remoteModels: { kind: 'nameMap' },
  maxNewTokens: { kind: 'int', min: 1, max: 1024 },
  explainMaxNewTokens: { kind: 'int', min: 1, max: 4096 },
  contextTokens: { kind: 'int', min: 64, max: 16384 },
  debounceMs: { kind: 'int', min: 0, max: 5000 },
  kvCacheMB: { kind: 'int', min: 0, max: 65536 },
  multiLineTimeMs: { kind: 'int', min: 0, max: 60000 },
  llamacppMerge: { kind: 'bool' },
  reuseSuggestions: { kind: 'bool' },
  enable: { kind: 'enableMap' },
  offline: { kind: 'bool' },
  autoInstallPacks: { kind: 'bool' },
  idleUnloadMinutes: { kind: 'int', min: 0, max: 10080 },
};

export const SERVER_SETTING_NAMES = Object.keys(SERVER_SETTING_SPECS) as ServerSettingName[];

/** Settings the extension itself uses; they are never sent to the server. */
export const CLIENT_SETTING_NAMES = ['pythonPath', 'serverArgs', 'inlineCompletions.enable', 'trace.server'] as const;
export type ClientSettingName = (typeof CLIENT_SETTING_NAMES)[number];

/** Client settings whose change needs a new server process. */
export const RESTART_SETTING_NAMES: readonly ClientSettingName[] = ['pythonPath', 'serverArgs'];

export type Getter = (name: string) => unknown;

/**
 * Settings that pick what runs (interpreter, its arguments), what it loads and writes (model, packs,
 * cache) or where the code goes (the openai backend's endpoint). A workspace may not choose them until it is trusted; package.json lists the same names in
 * capabilities.untrustedWorkspaces.restrictedConfigurations.
 */
export const RESTRICTED_SETTING_NAMES: readonly string[] = ['pythonPath', 'serverArgs', 'baseModel', 'packRepo', 'cacheDir', 'endpoint'];

/**
 * A getter for the `mole` section that honours restricted mode: in an untrusted workspace the
 * restricted settings come from `userValue` (the user's own settings) only.
 */
export function trustAwareGetter(get: Getter, userValue: Getter, trusted: boolean): Getter {
  if (trusted) return get;
  return (name) => (RESTRICTED_SETTING_NAMES.includes(name) ? userValue(name) : get(name));
}

export type Validation<T> = { ok: true; value: T } | { ok: false; problem: string };

function describe(value: unknown): string {
  if (value === undefined) return 'undefined';
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

/** Checks one server setting; `problem` names the setting and says what is wrong. */
export function validateServerSetting(name: ServerSettingName, value: unknown): Validation<unknown> {
  const spec = SERVER_SETTING_SPECS[name];
  const key = `${SECTION}.${name}`;
  switch (spec.kind) {
    case 'string': {
      if (typeof value !== 'string') return { ok: false, problem: `${key} must be a string, not ${describe(value)}.` };
      const trimmed = value.trim();
      if (spec.pattern && !new RegExp(spec.pattern).test(trimmed)) {
        return { ok: false, problem: `${key} must be ${spec.accepted ?? `like ${spec.pattern}`}; got ${describe(value)}.` };
      }
      return { ok: true, value: trimmed };
    }
    case 'int': {
      if (typeof value !== 'number' || !Number.isInteger(value)) {
        return { ok: false, problem: `${key} must be a whole number, not ${describe(value)}.` };
      }
      if (value < spec.min || value > spec.max) {
        return { ok: false, problem: `${key} must lie between ${spec.min} and ${spec.max}; got ${value}.` };
      }
      return { ok: true, value };
    }
    case 'bool':
      if (typeof value !== 'boolean') return { ok: false, problem: `${key} must be true or false, not ${describe(value)}.` };
      return { ok: true, value };
    case 'enableMap': {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        return { ok: false, problem: `${key} must be an object mapping languageIds to true/false, not ${describe(value)}.` };
      }
      const bad = Object.entries(value).filter(([, v]) => typeof v !== 'boolean');
      if (bad.length > 0) {
        const names = bad.map(([k]) => JSON.stringify(k)).join(', ');
        return { ok: false, problem: `${key}: the values of ${names} must be true or false.` };
      }
      return { ok: true, value: { ...(value as Record<string, boolean>) } };
    }
    case 'nameMap': {
      if (typeof value !== 'object' || value === null || Array.isArray(value)
          || !Object.values(value).every((v) => typeof v === 'string')) {
        return { ok: false, problem: `${key} must map languages to model names, not ${describe(value)}.` };
      }
      return { ok: true, value: { ...(value as Record<string, string>) } };
    }
  }
}

export interface ServerSettingsReading {
  /** Valid settings only; an invalid one is left out so the server keeps its previous value. */
  settings: ServerSettings;
  problems: string[];
}

/** Reads every server setting through `get` (undefined = not set anywhere → the default). */
export function readServerSettings(get: Getter): ServerSettingsReading {
  const settings: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const name of SERVER_SETTING_NAMES) {
    const raw = get(name);
    const value = raw === undefined || raw === null ? SERVER_SETTING_DEFAULTS[name] : raw;
    const checked = validateServerSetting(name, value);
    if (checked.ok) settings[name] = checked.value;
    else problems.push(checked.problem);
  }
  return { settings: settings as ServerSettings, problems };
}

/** The payload of `workspace/didChangeConfiguration` that protocol.py expects. */
export function didChangeConfigurationParams(settings: ServerSettings): { settings: { mole: ServerSettings } } {
  return { settings: { mole: settings } };
}

export interface ClientSettings {
  /** mole.pythonPath as written (variables not yet expanded); '' = not set. */
  pythonPath: string;
  serverArgs: string[];
  inlineCompletionsEnabled: boolean;
}

export interface ClientSettingsReading {
  settings: ClientSettings;
  problems: string[];
}

export function readClientSettings(get: Getter): ClientSettingsReading {
  const problems: string[] = [];
  let pythonPath = '';
  const rawPython = get('pythonPath');
  if (typeof rawPython === 'string') pythonPath = rawPython.trim();
  else if (rawPython !== undefined && rawPython !== null) {
    problems.push(`${SECTION}.pythonPath must be a string, not ${describe(rawPython)}.`);
  }

  let serverArgs: string[] = [];
  const rawArgs = get('serverArgs');
  if (Array.isArray(rawArgs) && rawArgs.every((a) => typeof a === 'string')) serverArgs = [...(rawArgs as string[])];
  else if (rawArgs !== undefined && rawArgs !== null) {
    problems.push(`${SECTION}.serverArgs must be a list of strings, not ${describe(rawArgs)}.`);
  }

  let inlineCompletionsEnabled = true;
  const rawInline = get('inlineCompletions.enable');
  if (typeof rawInline === 'boolean') inlineCompletionsEnabled = rawInline;
  else if (rawInline !== undefined && rawInline !== null) {
    problems.push(`${SECTION}.inlineCompletions.enable must be true or false, not ${describe(rawInline)}.`);
  }
  return { settings: { pythonPath, serverArgs, inlineCompletionsEnabled }, problems };
}

/**
 * Whether the extension works in documents of `languageId` according to `mole.enable`:
 * the language's own entry wins, then "*", then on.
 */
export function isLanguageEnabled(enable: Record<string, boolean> | undefined, languageId: string): boolean {
  if (!enable) return true;
  const own = enable[languageId];
  if (typeof own === 'boolean') return own;
  const fallback = enable['*'];
  if (typeof fallback === 'boolean') return fallback;
  return true;
}

/** A copy of `enable` with `languageId` switched on or off (the entry is dropped when "*" agrees). */
export function withLanguageEnabled(
  enable: Record<string, boolean> | undefined,
  languageId: string,
  enabled: boolean,
): Record<string, boolean> {
  const next: Record<string, boolean> = { ...(enable ?? { '*': true }) };
  if (languageId === '*') {
    next['*'] = enabled;
    return next;
  }
  const star = typeof next['*'] === 'boolean' ? next['*'] : true;
  if (star === enabled) delete next[languageId];
  else next[languageId] = enabled;
  return next;
}

export interface ConfigChange {
  /** A server setting changed: send didChangeConfiguration. */
  server: boolean;
  /** pythonPath or serverArgs changed: the server process must be restarted. */
  restart: boolean;
  /** The inline completion toggle or the enable map changed: refresh the status bar. */
  view: boolean;
}

/** Sorts a configuration change event; `affects` is `event.affectsConfiguration`. */
export function classifyConfigChange(affects: (section: string) => boolean): ConfigChange {
  if (!affects(SECTION)) return { server: false, restart: false, view: false };
  const server = SERVER_SETTING_NAMES.some((n) => affects(`${SECTION}.${n}`));
  const restart = RESTART_SETTING_NAMES.some((n) => affects(`${SECTION}.${n}`));
  const view = affects(`${SECTION}.inlineCompletions.enable`) || affects(`${SECTION}.enable`) || server;
  return { server, restart, view };
}
