// DOM helpers. Every string from the API reaches the page through text nodes or attribute
// values, never through HTML parsing: file names are chosen by strangers.

/**
 * Create an element. `props`: class, dataset, on<event> listeners, boolean flags, attributes.
 * Children: nodes, or anything else, which becomes a text node.
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") element.className = value;
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      element.addEventListener(key.slice(2), value);
    } else element.setAttribute(key, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
}

/** Replace all children of `element`. */
export function replaceChildren(element, ...children) {
  element.replaceChildren();
  append(element, children);
}

export function show(element, visible = true) {
  element.hidden = !visible;
}

/**
 * A URL safe to put in href/src: same-origin paths and http(s) links only, so a hostile
 * value can never become a javascript: or data: URL.
 */
export function safeUrl(value) {
  if (typeof value !== "string" || value === "") return null;
  try {
    const url = new URL(value, window.location.href);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

export const byId = (id) => document.getElementById(id);
