// Shared by sgnb's views (put in front of a view's module by sgnb.widgets.cache_panel.view_module).
// The view's <style> and root <div> (class `cls`, an empty data-`key` attribute that tests find), in `el`.
function viewRoot(el, css, cls, key) {
  const style = document.createElement("style");
  style.textContent = css;
  const root = document.createElement("div");
  root.className = cls;
  root.dataset[key] = "";
  el.append(style, root);
  return root;
}

// Call `fn` whenever one of the traits `names` changes; returns what stops that (a view's cleanup).
function onChanges(model, names, fn) {
  for (const name of names) model.on(`change:${name}`, fn);
  return () => {
    for (const name of names) model.off(`change:${name}`, fn);
  };
}
