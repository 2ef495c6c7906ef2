// Panels that show what the API answers (recipes, tool statistics) ask again when something
// changed; this keeps one request in flight and the last answer shown never older than the
// last ask.

// Wraps `load` so that calls made while it runs ask for one more run after it, not one each.
export function oneAtATime(load) {
  let running = null;
  let again = false;
  return function run() {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      try {
        do {
          again = false;
          await load();
        } while (again);
      } finally {
        running = null;
      }
    })();
    return running;
  };
}
