\set u random(1000000, 9000000000000000000)
SELECT lifecycle.record_activity(:u, 'c1', '{sync,relay}');
