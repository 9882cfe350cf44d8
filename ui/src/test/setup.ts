import { afterEach } from "vitest";
import { cleanup } from "@testing-library/react";

// jsdom has no layout: React Flow measures nodes with ResizeObserver and
// DOMMatrix, which these stand-ins satisfy.
class ResizeObserverStub {
  observe(): void {}
  unobserve(): void {}
  disconnect(): void {}
}
globalThis.ResizeObserver ??= ResizeObserverStub as unknown as typeof ResizeObserver;
class DOMMatrixStub {
  m22 = 1;
  constructor(_init?: string) {}
}
globalThis.DOMMatrixReadOnly ??= DOMMatrixStub as unknown as typeof DOMMatrixReadOnly;

afterEach(() => cleanup());
