// Panels that show what the API answers (recipes, schedules, tool statistics) ask again when
// something changed; this keeps one request in flight and the last answer shown never older
// than the last ask.

// Wraps `load` so that calls made while it runs ask for one more run after it, not one each.
// `load(stale)`: once `stale()` is true its answer is for a user who has signed out since
// (`forget()` was called): it must show nothing of it.
export function oneAtATime(load) {
  let running = null;
  let again = false;
  let generation = 0;
  function run() {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      try {
        do {
          again = false;
          const asked = generation;
          await load(() => asked !== generation);
        } while (again);
      } finally {
        running = null;
      }
    })();
    return running;
  }
  run.forget = () => {
    generation += 1;
  };
  return run;
}
