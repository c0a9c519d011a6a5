// TypeScript declarations for courier.js (served at /client.d.ts).

export interface Options {
  /** The server: http(s):// or ws(s)://; default the page's origin. */
  url?: string;
  /** A connection token (JWT). */
  token?: string;
  /** Called on every connect and when the token expires; resolves with a fresh token. */
  getToken?: () => string | Promise<string>;
  /** A guest's name, when there is no token. */
  name?: string;
  minReconnectDelayMs?: number;
  maxReconnectDelayMs?: number;
  ackTimeoutMs?: number;
  requestTimeoutMs?: number;
  pingIntervalMs?: number;
  pongTimeoutMs?: number;
  typingIntervalMs?: number;
  /** Events shown on a room's first join (0: none). */
  history?: number;
}

export declare const DEFAULTS: Readonly<Required<Omit<Options, 'url' | 'token' | 'getToken' | 'name'>>>;

export declare class CourierError extends Error {
  /** `unauthorized`, `forbidden`, `timeout`, `unavailable`, `rate_limited`, `closed`, ... */
  code: string;
  /** The publish id, for a publish that failed. */
  id?: string;
  /** The WebSocket close code, for a refused connection. */
  closeCode?: number;
  /** The room, for a room's refusal. */
  room?: string;
}

export interface Session {
  client_id: string;
  user: string | null;
  name: string;
  expires_at: number | null;
}

export type State = 'connecting' | 'connected' | 'disconnected';

export interface StateChange {
  state: State;
  /** The WebSocket close code and reason (disconnected). */
  code?: number;
  reason?: string;
  /** When the next attempt is (disconnected, reconnecting). */
  retryInMs?: number;
  attempt?: number;
  /** True when the client will not reconnect by itself (a refused token, 4003). */
  final?: boolean;
  session?: Session;
}

export interface Member { id: string; name: string; user: string | null }

export interface RoomEvent<T = unknown> {
  room: string;
  seq: number;
  from: string;
  user: string | null;
  data: T;
  ts: string;
}

export interface Joined {
  seq: number;
  epoch: string | null;
  /** null on the first join; false when events were missed (see `recovery`). */
  recovered: boolean | null;
  first: boolean;
}

export interface Recovery {
  recovered: false;
  /** `truncated`: older events are no longer kept; `epoch`: the room's history was lost
   *  and numbering started again; `resync`: the server lost history while connected. */
  reason: 'truncated' | 'epoch' | 'resync';
  seq: number;
  epoch: string | null;
}

type Unsubscribe = () => void;

declare class Emitter<Events> {
  on<K extends keyof Events>(type: K, fn: (value: Events[K]) => void): Unsubscribe;
  off<K extends keyof Events>(type: K, fn: (value: Events[K]) => void): void;
}

export interface ClientEvents {
  state: StateChange;
  connecting: StateChange;
  connected: StateChange;
  disconnected: StateChange;
  error: CourierError;
  refreshed: { expires_at: number };
  frame: Record<string, unknown>;
}

export declare class Client extends Emitter<ClientEvents> {
  state: State;
  session: Session | null;
  room(name: string): Room;
  close(): void;
  reconnect(): void;
}

export interface RoomEvents {
  message: RoomEvent;
  joined: Joined;
  recovery: Recovery;
  member_joined: Member;
  member_left: Member;
  typing: { from: string };
  presence: Member[];
  offline: Record<string, never>;
  left: { byServer: boolean };
  error: CourierError;
}

export declare class Room extends Emitter<RoomEvents> {
  readonly name: string;
  joined: boolean;
  /** The last seq delivered to the application, and its epoch. */
  seq: number | null;
  epoch: string | null;
  join(): Promise<Joined>;
  leave(): void;
  publish(data: unknown, options?: { id?: string }): Promise<number>;
  presence(): Promise<Member[]>;
  typing(): boolean;
}

export interface SubscriptionEvents {
  state: { state: State };
  joined: { room: string; seq: number; epoch: string | null; recovered?: boolean };
  message: RoomEvent;
  update: Record<string, unknown>;
  heartbeat: string;
  recovery: { recovered: false; seq: number; epoch: string | null };
  error: CourierError;
}

export declare class Subscription extends Emitter<SubscriptionEvents> {
  state: State;
  close(): void;
}

export declare function connect(options?: Options): Client;
export declare function subscribe(path: string, options?: Pick<Options, 'url' | 'token' | 'getToken' | 'minReconnectDelayMs'>): Subscription;
