-- Sample shop for `dbguard demo`. All personal data here is invented.
CREATE TABLE customers (
  id          serial PRIMARY KEY,
  name        text NOT NULL,
  email       text NOT NULL UNIQUE,
  ssn         text,
  card_number text,
  phone       text,
  birth_date  date,
  country     text
);
CREATE TABLE orders (
  id          serial PRIMARY KEY,
  customer_id int NOT NULL REFERENCES customers(id),
  total_cents int NOT NULL,
  status      text NOT NULL DEFAULT 'paid',
  created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO customers (name, email, ssn, card_number, phone, birth_date, country) VALUES
  ('Ada Lovelace',     'ada@example.org',      '123-45-6789', '4111111111111111', '+44 20 7946 0001', '1985-12-10', 'GB'),
  ('Grace Hopper',     'grace@example.com',    '234-56-7890', '5500000000000004', '+1 202 555 0102', '1976-12-09', 'US'),
  ('Alan Turing',      'alan@example.net',     '345-67-8901', '340000000000009',  '+44 20 7946 0003', '1992-06-23', 'GB'),
  ('Katherine Johnson','katherine@example.org','456-78-9012', '6011000000000004', '+1 757 555 0104', '1988-08-26', 'US'),
  ('Edsger Dijkstra',  'edsger@example.nl',    '567-89-0123', '3530111333300000', '+31 20 555 0105', '1980-05-11', 'NL');
INSERT INTO orders (customer_id, total_cents, status)
SELECT 1 + (g % 5), 500 + (g * 137) % 20000, CASE WHEN g % 7 = 0 THEN 'refunded' ELSE 'paid' END
FROM generate_series(1, 40) AS g;
