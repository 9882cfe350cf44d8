// FromSchema: the TypeScript type of the values a JSON Schema declared
// `as const` accepts, for typing handlers from the schemas they register.
// It covers the common keywords (type, properties, required, items, enum,
// const); anything else is `unknown`. Integers are `number | bigint`,
// because integers beyond Number.MAX_SAFE_INTEGER arrive as bigints.

type Simplify<T> = { [K in keyof T]: T[K] } & {};

type FromType<S, T> = T extends "string"
  ? string
  : T extends "integer"
    ? number | bigint
    : T extends "number"
      ? number | bigint
      : T extends "boolean"
        ? boolean
        : T extends "null"
          ? null
          : T extends "array"
            ? S extends { items: infer I }
              ? FromSchema<I>[]
              : unknown[]
            : T extends "object"
              ? FromObject<S>
              : unknown;

type FromObject<S> = S extends { properties: infer P }
  ? Simplify<
      {
        [K in keyof P as K extends Req<S> ? K : never]: FromSchema<P[K]>;
      } & {
        [K in keyof P as K extends Req<S> ? never : K]?: FromSchema<P[K]>;
      } & { [key: string]: unknown }
    >
  : { [key: string]: unknown };

type Req<S> = S extends { required: readonly (infer R)[] } ? R : never;

/** The type of the values a JSON Schema (declared `as const`) accepts. */
export type FromSchema<S> = S extends { const: infer C }
  ? C
  : S extends { enum: readonly (infer E)[] }
    ? E
    : S extends { type: readonly (infer T)[] }
      ? FromType<S, T>
      : S extends { type: infer T }
        ? FromType<S, T>
        : unknown;
