import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";

export function when(t: Timestamp | undefined): string {
  return t ? timestampDate(t).toLocaleString() : "";
}

// took is the time from a to b, or to now while b has not happened.
export function took(a: Timestamp | undefined, b: Timestamp | undefined): string {
  if (!a) return "";
  const ms = (b ? timestampDate(b).getTime() : Date.now()) - timestampDate(a).getTime();
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} m ${Math.round((ms % 60_000) / 1000)} s`;
}

export function prettyJson(s: string): string {
  if (!s) return "";
  try {
    return JSON.stringify(JSON.parse(s), null, 2);
  } catch {
    return s;
  }
}
