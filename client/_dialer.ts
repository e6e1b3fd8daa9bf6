/**
 * The default way to reach an endpoint: Deno's TCP/TLS sockets for
 * `mqtt://`/`mqtts://`, the web-standard WebSocket for `ws://`/`wss://`.
 *
 * @module
 */

import type { Settings } from "../options.ts";
import type { Dialer } from "../transport/connection.ts";
import { tcpDialer } from "../transport/tcp.ts";
import { webSocketDialer } from "../transport/websocket.ts";

/** A dialer choosing the transport by the endpoint's scheme. */
export function defaultDialer(settings: Settings): Dialer {
  let tcp: Dialer | undefined;
  const ws = webSocketDialer();
  return (endpoint, context) => {
    if (endpoint.scheme === "ws" || endpoint.scheme === "wss") return ws(endpoint, context);
    tcp ??= tcpDialer(settings.tls, settings.dial);
    return tcp(endpoint, context);
  };
}
