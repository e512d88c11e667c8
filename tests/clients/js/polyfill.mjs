// Polyfills that let current matrix-js-sdk releases run on Node 20.
//
// matrix-js-sdk (43.x) declares `engines.node >= 22` and calls `Promise.withResolvers()`
// (ES2024; Node >= 22), e.g. in the sync keep-alive and the HTTP retry paths. Node 20 lacks
// it, so this module defines it when absent. Nothing else the SDK uses is missing on Node 20
// (checked by grepping lib/ for other ES2023+/ES2024 built-ins: Object.groupBy, Set methods,
// Promise.try, iterator helpers...).
//
// How it is loaded: chat.mjs imports this file with its *first* `import` statement, before
// `matrix-js-sdk`. ES modules are evaluated depth-first in import order, so this module body
// has run before any SDK module is evaluated (the SDK only calls withResolvers at run time
// anyway). Alternatively: `node --import ./polyfill.mjs your-script.mjs`.
//
// `npm install` on Node 20 prints EBADENGINE warnings for matrix-js-sdk, content-type and
// p-retry; they are warnings only (engine-strict is off by default).

if (typeof Promise.withResolvers !== "function") {
    Object.defineProperty(Promise, "withResolvers", {
        configurable: true,
        writable: true,
        enumerable: false,
        value: function withResolvers() {
            let resolve;
            let reject;
            // `this` so subclasses (Promise.withResolvers.call(MyPromise)) work as in the spec.
            const promise = new this((res, rej) => {
                resolve = res;
                reject = rej;
            });
            return { promise, resolve, reject };
        },
    });
}
