/**
 * Names and shapes of everything the mole-lsp server speaks beyond standard LSP.
 *
 * The reference is `mole_lsp/server/protocol.py` in the repository root: this file only mirrors it for the
 * extension. When the two disagree, protocol.py wins; change both together.
 *
 * This module must not import 'vscode' (it is used by the unit tests, which run in plain Node).
 */

/** An LSP range (zero-based line and UTF-16 character offsets). */
export interface LspPosition {
  line: number;
  character: number;
}

export interface LspRange {
  start: LspPosition;
  end: LspPosition;
}

// -- commands (workspace/executeCommand, `arguments` is a list holding ONE object) ----------------

export const CMD_EXPLAIN = 'mole.explain';
export const CMD_TRANSLATE = 'mole.translate';
export const CMD_INSTALL_PACK = 'mole.installPack';
export const CMD_REMOVE_PACK = 'mole.removePack';
export const CMD_LIST_PACKS = 'mole.listPacks';
export const CMD_STATUS = 'mole.status';

export const COMMANDS = [
  CMD_EXPLAIN,
  CMD_TRANSLATE,
  CMD_INSTALL_PACK,
  CMD_REMOVE_PACK,
  CMD_LIST_PACKS,
  CMD_STATUS,
] as const;

export type ServerCommand = (typeof COMMANDS)[number];

export interface ExplainParams {
  uri: string;
  range: LspRange;
}

/** `stopReason` of an answer cut because the model looped: it ends before the repeated part (the server
 * also says so with window/showMessage). */
export const STOP_REPETITION = 'repetition';

export interface ExplainResult {
  markdown: string;
  /** Registry id of the explained code's language. */
  language: string;
  /** Why the answer ended: `eos`, `stop`, `max_tokens`, `cancelled`, STOP_REPETITION, ... */
  stopReason?: string;
}

export interface TranslateParams {
  uri: string;
  range: LspRange;
  /** Registry id or alias of the target language ("rust", "c++"). */
  target: string;
}

export interface TranslateResult {
  code: string;
  /** Registry id of the target language. */
  language: string;
  /** VS Code languageId to open the result with. */
  vscodeLanguageId: string;
  /** Why the answer ended: `eos`, `stop`, `max_tokens`, `cancelled`, STOP_REPETITION, ... */
  stopReason?: string;
}

export interface PackListParams {
  languages: string[];
}

export interface InstallPackResult {
  installed: string[];
  errors: Record<string, string>;
}

export interface RemovePackResult {
  removed: string[];
  errors: Record<string, string>;
}

export interface PackInfo {
  /** Registry id. */
  language: string;
  /** Display name. */
  name: string;
  /** VS Code languageIds the registry maps to this language (may be empty; absent from older servers). */
  vscodeLanguageIds: string[];
  installed: boolean;
  /** Listed in the pack repository's index. */
  available: boolean;
  sizeBytes: number | null;
  /** Installed revision (commit sha). */
  revision: string | null;
}

export interface ListPacksResult {
  packs: PackInfo[];
  offline: boolean;
  repo: string;
  revision: string;
}

/** Maps each server command to the type of its single argument and of its result. */
export interface CommandSignatures {
  [CMD_EXPLAIN]: { params: ExplainParams; result: ExplainResult };
  [CMD_TRANSLATE]: { params: TranslateParams; result: TranslateResult };
  [CMD_INSTALL_PACK]: { params: PackListParams; result: InstallPackResult };
  [CMD_REMOVE_PACK]: { params: PackListParams; result: RemovePackResult };
  [CMD_LIST_PACKS]: { params: Record<string, never>; result: ListPacksResult };
  [CMD_STATUS]: { params: Record<string, never>; result: Status };
}

// -- notifications (server → client) ----------------------------------------------------------------

export const NOTIFY_STATUS = 'mole/status';

export const STATES = ['starting', 'loading', 'ready', 'downloading', 'generating', 'error'] as const;
export type State = (typeof STATES)[number];

/**
 * `activeUri`, `vscodeLanguageId`, `activeLanguage`, `activeExpert` and `baseOnly` describe the last
 * finished generation and change together (`state: 'generating'` alone announces the next one).
 */
export interface Status {
  state: State;
  /**
   * Expert pack used by the last generation (may be a fallback). null: no expert took part, the shared
   * adapter alone answered, or the bare base model when `baseOnly` (an explanation's prose always comes
   * from the NL adapter; this is then the expert of the code's language).
   */
  activeExpert: string | null;
  /** Registry id of the language the last generation was for. */
  activeLanguage: string | null;
  /**
   * The document the last generation came from, as the client sent its URI, when it was in that
   * document's language; null before the first request and after a translation (target's expert).
   */
  activeUri: string | null;
  /** VS Code languageId of `activeLanguage`: the document's own one when `activeUri` is set. */
  vscodeLanguageId: string | null;
  /** No core pack: the bare base model answers. */
  baseOnly: boolean;
  /** HF_HUB_OFFLINE / no network: cached packs only. */
  offline: boolean;
  /** Human-readable detail ("downloading rust pack", an error, ...). */
  message: string | null;
}

// -- settings ---------------------------------------------------------------------------------------

/** Values the `device` setting accepts (protocol.py's DEVICE_PATTERN, also package.json's pattern). */
export const DEVICE_PATTERN = '^(auto|cpu|cuda|cuda:[0-9]+|mps)$';
/** Values the `backend` setting accepts (protocol.py's BACKEND_PATTERN, also package.json's pattern). */
export const BACKEND_PATTERN = '^(auto|torch|llamacpp|openai)$';

/**
 * The server's settings as sent in `initializationOptions` and in
 * `workspace/didChangeConfiguration` (`{settings: {mole: ServerSettings}}`). Every field is optional.
 */
export interface ServerSettings {
  baseModel?: string;
  packRepo?: string;
  packRevision?: string;
  cacheDir?: string;
  device?: string;
  backend?: string;
  endpoint?: string;
  apiKey?: string;
  remoteModels?: Record<string, string>;
  maxNewTokens?: number;
  explainMaxNewTokens?: number;
  contextTokens?: number;
  debounceMs?: number;
  kvCacheMB?: number;
  multiLineTimeMs?: number;
  llamacppMerge?: boolean;
  reuseSuggestions?: boolean;
  enable?: Record<string, boolean>;
  offline?: boolean;
  autoInstallPacks?: boolean;
  idleUnloadMinutes?: number;
}

export type ServerSettingName = keyof ServerSettings;

/** The defaults of protocol.py's SETTINGS table. */
export const SERVER_SETTING_DEFAULTS: Required<ServerSettings> = {
  baseModel: '',
  packRepo: '',
  packRevision: 'main',
  cacheDir: '',
  device: 'auto',
  backend: 'auto',
  endpoint: '',
  apiKey: '',
  remoteModels: {},
  maxNewTokens: 64,
  explainMaxNewTokens: 256,
  contextTokens: 1024,
  debounceMs: 150,
  kvCacheMB: 256,
  multiLineTimeMs: 1000,
  llamacppMerge: true,
  reuseSuggestions: true,
  enable: { '*': true },
  offline: false,
  autoInstallPacks: true,
  idleUnloadMinutes: 30,
};
