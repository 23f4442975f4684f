/**
 * A bounded JSON-over-HTTP(S) request for the verifiers (OIDC discovery, TokenReview). node:http
 * rather than fetch so a private CA (the cluster's ca.crt) can be given per request.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';

export interface JsonRequest {
  method: 'GET' | 'POST';
  url: string;
  headers?: Record<string, string>;
  body?: unknown;
  /** PEM of the CA that signs the server's certificate */
  caPem?: string;
  timeoutMs?: number;
  /** refuse bigger answers; default 1 MiB */
  maxBytes?: number;
}

export interface JsonResponse {
  status: number;
  body: unknown;
}

export function requestJson(req: JsonRequest): Promise<JsonResponse> {
  const url = new URL(req.url);
  const send = url.protocol === 'https:' ? httpsRequest : url.protocol === 'http:' ? httpRequest : undefined;
  if (!send) return Promise.reject(new Error(`unsupported URL scheme ${url.protocol}`));
  const payload = req.body === undefined ? undefined : Buffer.from(JSON.stringify(req.body));
  const max = req.maxBytes ?? 1024 * 1024;
  return new Promise((resolve, reject) => {
    const r = send(
      url,
      {
        method: req.method,
        headers: {
          accept: 'application/json',
          ...(payload
            ? { 'content-type': 'application/json', 'content-length': String(payload.length) }
            : {}),
          ...req.headers,
        },
        ...(req.caPem ? { ca: req.caPem } : {}),
        timeout: req.timeoutMs ?? 5000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > max) {
            res.destroy(new Error(`answer larger than ${max} bytes`));
            return;
          }
          chunks.push(c);
        });
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown;
          try {
            body = text === '' ? undefined : JSON.parse(text);
          } catch {
            reject(new Error(`HTTP ${res.statusCode}: answer is not JSON`));
            return;
          }
          resolve({ status: res.statusCode ?? 0, body });
        });
      },
    );
    r.on('timeout', () => r.destroy(new Error(`no answer within ${req.timeoutMs ?? 5000} ms`)));
    r.on('error', reject);
    r.end(payload);
  });
}
